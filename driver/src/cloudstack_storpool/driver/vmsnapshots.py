"""VM snapshots (disks only): one crash-consistent instant across all of a VM's disks.

StorPool's VolumesGroupSnapshot freezes every listed volume at one point in time, so a VM
snapshot is one API call whatever the number of disks, and the guest's filesystems spread over
several disks see the same instant after a revert. Memory is not snapshotted (StorPool holds
disks only); a request for it is refused instead of silently dropping it.

Members are named `naming.vm_snapshot_member(vm snapshot uuid, volume uuid)`: the name says
which disk each member restores, and a retried request meets `objectExists` instead of taking
a second group.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cloudstack_storpool import names
from cloudstack_storpool.driver import locate, naming, pools, tags
from cloudstack_storpool.driver.identity import LocatedVolume, on_storpool
from cloudstack_storpool.driver.removal import drop_snapshot
from cloudstack_storpool.driver.revert import refuse_running, restore_tags, revert_volume
from cloudstack_storpool.errors import Conflict, NotFound, SpExists, SpNotFound, ValidationError
from cloudstack_storpool.uuids import Uuid, check_uuid

if TYPE_CHECKING:
    from cloudstack_storpool.cloudstack.records import VirtualMachine
    from cloudstack_storpool.driver.context import DriverContext
    from cloudstack_storpool.spconn import StorPoolConn
    from cloudstack_storpool.sprecords import SpSnapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Member:
    volume_uuid: Uuid
    volume: str
    snapshot: str
    global_id: str
    path: str


@dataclass(frozen=True)
class VMSnapshotInfo:
    uuid: str
    vm_uuid: Uuid
    members: list[Member]
    recovered: bool


@dataclass(frozen=True)
class VMSnapshotReverted:
    uuid: str
    vm_uuid: Uuid
    volumes: list[str]
    """CloudStack uuids of the disks restored."""


@dataclass(frozen=True)
class VMSnapshotDeleted:
    uuid: str
    vm_uuid: Uuid
    deleted: list[str]
    """StorPool names of the member snapshots that were removed (already gone ones are not listed)."""


def _disks(ctx: DriverContext, vm_uuid: Uuid) -> tuple[VirtualMachine, list[LocatedVolume]]:
    """The VM and its disks, all of which must be on StorPool pools of one cluster (one group call)."""
    check_uuid(vm_uuid, "vm_uuid")
    vm = ctx.cloudstack.vm(vm_uuid)
    if vm is None:
        raise NotFound(f"vm_uuid: CloudStack has no VM {vm_uuid}")
    volumes = sorted(ctx.cloudstack.volumes(vm_id=vm_uuid), key=lambda v: (v.device_id is None, v.device_id or 0))
    if not volumes:
        raise NotFound(f"vm_uuid: CloudStack lists no volumes for VM {vm_uuid}")
    disks: list[LocatedVolume] = []
    for vol in volumes:
        disk = on_storpool(ctx, vol)
        if disk is None:
            raise ValidationError(
                "vm_uuid", f"disk {vol.name or vol.id} of VM {vm_uuid} is not on StorPool: a VM snapshot needs all of them there")
        disks.append(disk)
    conns = {id(ctx.conn(d.pool)) for d in disks}
    if len(conns) > 1:
        raise ValidationError("vm_uuid", f"the disks of VM {vm_uuid} are on more than one StorPool cluster")
    return vm, disks


def _member(vm_snapshot_uuid: Uuid, disk: LocatedVolume, snapshot: str, global_id: str) -> Member:
    return Member(disk.uuid, disk.name, snapshot, global_id, names.BYID_PREFIX + global_id)


def take_vm_snapshot(
    ctx: DriverContext, *, vm_uuid: Uuid, vm_snapshot_uuid: Uuid, memory: bool = False,
) -> VMSnapshotInfo:
    """One VolumesGroupSnapshot over every disk of the VM, tagged `uuid`, `cvm`, `cs=group`."""
    if memory:
        raise ValidationError("memory", "StorPool VM snapshots hold disks only; snapshots with memory are not supported")
    key = check_uuid(vm_snapshot_uuid, "vm_snapshot_uuid")
    _, disks = _disks(ctx, vm_uuid)
    conn = ctx.conn(disks[0].pool)
    member_names = [naming.vm_snapshot_member(key, d.uuid) for d in disks]
    group_tags = tags.identity(key, tags.GROUP, cvm=vm_uuid.lower())
    try:
        # Each member also carries its disk's pool, so a pool holding VM snapshots cannot be removed.
        made = conn.group_snapshot([(d.name, n) for d, n in zip(disks, member_names, strict=True)], tags=group_tags,
                                   member_tags=[pools.pool_tags(d.pool) for d in disks])
    except SpExists:
        return VMSnapshotInfo(key, vm_uuid.lower(), _existing_members(conn, key, disks, member_names), True)
    by_gid = {m.volume_global_id: m for m in made if m.volume_global_id}
    by_name = {m.volume: m for m in made}
    members = []
    for disk, name in zip(disks, member_names, strict=True):
        found = by_gid.get(disk.name.removeprefix("~")) or by_name.get(disk.name)
        gid = found.snapshot_global_id if found is not None else ""
        members.append(_member(key, disk, name, gid))
    if any(not m.global_id for m in members):
        # A lost response recovered by tags answers with the volumes' display names; look the
        # members up by their own names instead of guessing.
        members = _existing_members(conn, key, disks, member_names)
    return VMSnapshotInfo(key, vm_uuid.lower(), members, False)


def _existing_members(conn: StorPoolConn, key: str, disks: list[LocatedVolume], member_names: list[str]) -> list[Member]:
    """The members of a group taken before (a retry): all of them, each carrying our uuid."""
    members = []
    for disk, name in zip(disks, member_names, strict=True):
        snap = conn.snapshot(name)
        if not tags.owned_by(snap, key):
            raise Conflict(f"vm_snapshot_uuid: VM snapshot {key} exists only in part on StorPool ({name} is missing)")
        members.append(_member(key, disk, name, snap.global_id))
    return members


def revert_vm_snapshot(ctx: DriverContext, *, vm_uuid: Uuid, vm_snapshot_uuid: Uuid) -> VMSnapshotReverted:
    """Restore every disk of a stopped VM to the snapshot's instant, keeping iops and tags.

    Every member is checked to exist before any disk is touched, so a snapshot missing a disk
    leaves the VM as it was rather than half reverted.
    """
    key = check_uuid(vm_snapshot_uuid, "vm_snapshot_uuid")
    vm, disks = _disks(ctx, vm_uuid)
    refuse_running(vm, f"revert of VM snapshot {key}")
    conn = ctx.conn(disks[0].pool)
    plan = []
    java: list[SpSnapshot] | None = None
    for disk in disks:
        member = naming.vm_snapshot_member(key, disk.uuid)
        if not tags.owned_by(conn.snapshot(member), key):
            # Not the project's: a group the Java plugin took (anonymous members, one list).
            java = locate.group_members(conn, key) if java is None else java
            found = locate.member_of(java, disk.name)
            if found is None:
                raise NotFound(f"vm_snapshot_uuid: VM snapshot {key} has no snapshot of disk {disk.cs.name or disk.uuid}")
            member = found.ref
        summary = conn.volume(disk.name)
        if summary is None:
            raise NotFound(f"vm_uuid: disk {disk.cs.name or disk.uuid} ({disk.name}) is not on StorPool")
        plan.append((disk, member, summary))
    # One VolumesReassign detaches every disk (the VM is stopped: these are stale attachments).
    conn.detach([summary for _, _, summary in plan], force=True)
    for disk, member, summary in plan:
        try:
            revert_volume(conn, disk, member, summary, detach=False)
        except SpNotFound:
            raise NotFound(f"vm_snapshot_uuid: member {member} of VM snapshot {key} vanished during the revert") from None
        log.info("reverted %s to %s (tags kept: %s)", disk.name, member, sorted(restore_tags(summary.tags)))
    return VMSnapshotReverted(key, vm_uuid.lower(), [d.uuid for d, _, _ in plan])


def delete_vm_snapshot(ctx: DriverContext, *, vm_uuid: Uuid, vm_snapshot_uuid: Uuid) -> VMSnapshotDeleted:
    """Force-detach and delete every member; members already gone are fine.

    Members are found by name from the VM's disks (no listing of the whole cluster). When the
    VM or its disks are gone, the members are found by their `uuid`/`cs=group` tags on every
    cluster the pools file names.
    """
    key = check_uuid(vm_snapshot_uuid, "vm_snapshot_uuid")
    check_uuid(vm_uuid, "vm_uuid")
    deleted: list[str] = []
    disks: list[LocatedVolume] = []
    if ctx.cloudstack.vm(vm_uuid) is not None:  # listVolumes refuses the id of a VM that is gone
        disks = [d for v in ctx.cloudstack.volumes(vm_id=vm_uuid) if (d := on_storpool(ctx, v)) is not None]
    if disks:
        for disk in disks:
            member = naming.vm_snapshot_member(key, disk.uuid)
            if drop_snapshot(ctx.conn(disk.pool), member):
                deleted.append(member)
        if len(deleted) == len(disks):
            return VMSnapshotDeleted(key, vm_uuid.lower(), deleted)
        # Some member had no project name: the Java plugin's anonymous members, found by tags below.
    for pool, *_ in pools.by_cluster(ctx):
        conn = ctx.conn(pool)
        for snap in locate.group_members(conn, key):
            if drop_snapshot(conn, snap.ref):
                deleted.append(snap.ref)
    return VMSnapshotDeleted(key, vm_uuid.lower(), deleted)
