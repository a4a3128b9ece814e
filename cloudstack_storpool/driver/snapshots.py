"""Volume snapshots, the secondary-storage bypass, and what is made from snapshots.

A StorPool snapshot is a metadata operation (no data copied), so the driver always takes one
and keeps it: later volumes and templates are children of it and cost one API call. Whether a
qcow2 copy also goes to CloudStack's secondary storage is decided per snapshot by
`sp.bypass.secondary.storage`, read through the settings cache at the moment of the snapshot,
so an operator's change applies to the next snapshot without a restart.

Every object made here has a deterministic name derived from CloudStack uuids, so a retried
request finds what the first attempt made instead of making a second one, and every failure
path removes what this call created: a failed backup leaves neither a StorPool snapshot (the
CloudStack snapshot is reported failed) nor a partial file (the agent writes to a temporary
name and renames on success).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from cloudstack_storpool import names
from cloudstack_storpool.bounds import Iops
from cloudstack_storpool.driver import naming, offerings, pools, tags, templates, volumes
from cloudstack_storpool.driver.secondary import SecondaryLocation, agent_refusals
from cloudstack_storpool.errors import (
    AgentError,
    CloudStackError,
    Conflict,
    NotFound,
    ProjectError,
    SpExists,
    SpNotFound,
    StorPoolError,
    ValidationError,
)

if TYPE_CHECKING:
    from cloudstack_storpool.agent.client import AgentClient
    from cloudstack_storpool.cloudstack import VirtualMachine, Volume
    from cloudstack_storpool.driver.context import DriverContext
    from cloudstack_storpool.poolconfig import PoolSpec
    from cloudstack_storpool.spconn import StorPoolConn

log = logging.getLogger(__name__)

BYPASS_SETTING = "sp.bypass.secondary.storage"

T = TypeVar("T")


# ---------------------------------------------------------------------------- results


class Result:
    """JSON-able results: the service returns `to_json()` as the response body."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class SecondaryCopy(Result):
    """A qcow2 an agent wrote to secondary storage."""

    store: str
    path: str
    format: str
    virtual_size: int
    physical_size: int
    agent: str
    """The agent that wrote it."""


@dataclass(frozen=True)
class SnapshotInfo(Result):
    uuid: str
    name: str
    """StorPool name (`naming.snapshot(uuid)`)."""
    global_id: str
    path: str
    """What CloudStack stores: `/dev/storpool-byid/<globalId>`."""
    volume: str
    """StorPool API name of the volume it was taken of."""
    pool: str
    bypassed: bool
    """True: kept on StorPool only (`sp.bypass.secondary.storage` was true)."""
    backup: SecondaryCopy | None
    recovered: bool
    """A retry found the snapshot taken by an earlier attempt instead of taking a second one."""


@dataclass(frozen=True)
class SnapshotDeleted(Result):
    uuid: str
    name: str
    existed: bool


@dataclass(frozen=True)
class Reverted(Result):
    volume_uuid: str
    volume: str
    snapshot: str
    iops: int
    tags: dict[str, str]


@dataclass(frozen=True)
class VolumeFromSnapshot(Result):
    uuid: str
    name: str
    global_id: str
    path: str
    source: str
    """`storpool` (a child of the snapshot, nothing copied) or `secondary` (copied by an agent)."""
    copied_bytes: int
    recovered: bool
    agent: str | None = None
    """The agent that copied the data in (secondary source only)."""


@dataclass(frozen=True)
class TemplateFromSnapshot(Result):
    template_uuid: str
    pool: str
    name: str
    """The template's cached snapshot on this pool (`naming.template_cache`)."""
    global_id: str
    path: str
    size: int | None
    """Bytes, when known (from StorPool for an existing cache, else from the secondary copy)."""
    source: str
    """StorPool name of the snapshot or volume it was made from."""
    secondary: SecondaryCopy | None
    recovered: bool


# ---------------------------------------------------------------------------- helpers shared by the driver II modules


@dataclass(frozen=True)
class SourceVolume:
    """A CloudStack volume on a StorPool pool, with the StorPool name to address it by."""

    cs: Volume
    pool: PoolSpec
    name: str

    @property
    def uuid(self) -> str:
        return self.cs.id


def storpool_volume(ctx: DriverContext, volume_uuid: str, field: str = "volume_uuid") -> SourceVolume:
    """Look a CloudStack volume up and make sure it lives on one of our pools.

    CloudStack stores `/dev/storpool-byid/<globalId>` as the path, which survives renames
    (migration); volumes without a path yet are addressed by their deterministic name.
    """
    naming.check_uuid(volume_uuid, field)
    vol = ctx.cloudstack.volume(volume_uuid)
    if vol is None:
        raise NotFound(f"{field}: CloudStack has no volume {volume_uuid}")
    return _on_storpool(ctx, vol, field)


def _on_storpool(ctx: DriverContext, vol: Volume, field: str) -> SourceVolume:
    if not vol.storage_id:
        raise ValidationError(field, f"volume {vol.id} is not on a primary storage pool")
    try:
        pool = ctx.pool(vol.storage_id)
    except ValidationError:
        raise ValidationError(field, f"volume {vol.id} is not on a StorPool pool (pool {vol.storage_id})") from None
    return SourceVolume(vol, pool, volumes.ref(volume_uuid=vol.id, path=vol.path, path_field=f"{field}.path"))


def on_storpool(ctx: DriverContext, vol: Volume, field: str = "volume") -> SourceVolume | None:
    """The volume's StorPool handle, or None when it is on some other kind of pool."""
    try:
        return _on_storpool(ctx, vol, field)
    except ValidationError:
        return None


def on_any_host(ctx: DriverContext, pool: PoolSpec, work: Callable[[AgentClient], T]) -> tuple[str, T]:
    """Run a copy between StorPool and secondary storage on any Up host of the pool's zone
    (Driver I's rotation, moving on while agents are unreachable); returns which agent ran it.
    Any host will do: the object is attached there only for the copy."""
    used: list[str] = []

    def run(client: AgentClient) -> T:
        used.append(client.base_url)
        return work(client)

    result = ctx.agents.run_on_pool(pool, run)
    return used[-1], result


def restore_tags(current: dict[str, str] | None) -> dict[str, str]:
    """The tags to write back after a revert: everything the volume carried (cvm, disk,
    vc-policy, qc, identity). StorPool keeps tags on revert today; writing them back costs
    nothing in the same VolumeUpdate that re-applies iops and guards against the day it
    does not."""
    return dict(current or {})


def undo_and_fail(failure: str, cause: BaseException, undone: str, undo: Callable[[], object]) -> ProjectError:
    """Undo what this call made after step `failure` failed, and build the error to raise.

    The error is of the same kind as the cause (an agent error stays an AgentError, a StorPool
    error keeps its name) and says what failed, why, and whether the undo worked (`undone`
    describes it when it did); an undo that fails too is reported, not raised over the cause.
    """
    try:
        undo()
        outcome = undone
    except Exception as exc:  # reported together with the original error
        log.error("%s, and undoing it failed: %s", failure, exc)
        outcome = f"undoing it failed too, so it is left behind: {exc}"
    text = f"{failure}: {cause}; {outcome}"
    if isinstance(cause, StorPoolError):
        return type(cause)(cause.name, text, status=cause.status, query=cause.query)
    if isinstance(cause, ValidationError):
        return ValidationError(cause.field, text)
    if isinstance(cause, CloudStackError):
        return CloudStackError(cause.command, text, errorcode=cause.errorcode)
    if isinstance(cause, AgentError):
        return AgentError(text)
    if isinstance(cause, (NotFound, Conflict)):
        return type(cause)(text)
    return ProjectError(text)


def backup_to_secondary(ctx: DriverContext, pool: PoolSpec, snapshot: str, where: SecondaryLocation) -> SecondaryCopy:
    """A StorPool snapshot -> qcow2 at `where`, by an agent (temporary file, renamed when whole)."""
    with agent_refusals("secondary"):
        agent, res = on_any_host(
            ctx, pool, lambda c: c.backup_snapshot(snapshot=snapshot, store=where.store, path=where.path,
                                               progress=ctx.progress))
    return SecondaryCopy(where.store, where.path, str(res.get("format", "qcow2")), int(res.get("virtual_size", 0)),
                         int(res.get("physical_size", 0)), agent)


def drop_snapshot(conn: StorPoolConn, name: str) -> bool:
    """Force-detach (an agent may have been cut off mid-copy, a host may hold a stale
    attachment) then delete; gone is fine. True when it existed."""
    conn.detach_everywhere(name, snapshot=True)
    return conn.snapshot_delete(name, missing_ok=True)


# ---------------------------------------------------------------------------- take / delete / revert


def take_snapshot(
    ctx: DriverContext,
    *,
    volume_uuid: str,
    snapshot_uuid: str,
    secondary: SecondaryLocation | None = None,
    encrypted: bool = False,
) -> SnapshotInfo:
    """Snapshot a volume on StorPool and, unless bypassed, back it up to secondary storage.

    `secondary` is where CloudStack wants the backup; it is required when the bypass is off.
    Snapshots of encrypted volumes stay on StorPool only: a qcow2 of the raw device would hold
    ciphertext CloudStack cannot read back, so they are refused unless the bypass is on.
    """
    name = naming.snapshot(snapshot_uuid)
    src = storpool_volume(ctx, volume_uuid)
    bypass = bool(ctx.settings.get(BYPASS_SETTING, pool=src.pool.uuid or None))
    if not bypass:
        if encrypted:
            raise ValidationError(
                "encrypted", f"snapshots of encrypted volumes need {BYPASS_SETTING}=true (kept on StorPool only)"
            )
        if secondary is None:
            raise ValidationError("secondary", f"a secondary-storage location is required while {BYPASS_SETTING} is false")
        secondary.check()
    conn = ctx.conn(src.pool)
    snap_tags = pools.identity_tags(snapshot_uuid.lower(), tags.SNAPSHOT, src.pool, cvm=src.cs.vm_id)
    recovered = False
    try:
        created = conn.snapshot_create(src.name, name=name, tags=snap_tags)
        recovered = created.recovered
        gid = created.global_id
    except SpExists:
        # The same CloudStack snapshot asked again (a retried job): use it if it is ours.
        existing = conn.snapshot(name)
        if not tags.owned_by(existing, snapshot_uuid.lower()):
            raise Conflict(f"snapshot_uuid: StorPool already has an object named {name} that is not this snapshot") from None
        gid, recovered = existing.globalId, True
    backup = None
    if not bypass:
        assert secondary is not None
        try:
            backup = backup_to_secondary(ctx, src.pool, name, secondary)
        except Exception as exc:
            raise undo_and_fail(f"backup of snapshot {snapshot_uuid} to secondary storage failed", exc,
                                f"the StorPool snapshot {name} was removed", lambda: drop_snapshot(conn, name)) from exc
    return SnapshotInfo(snapshot_uuid.lower(), name, gid, names.BYID_PREFIX + gid, src.name, src.pool.uuid,
                        bypass, backup, recovered)


def delete_snapshot(ctx: DriverContext, *, pool: str, snapshot_uuid: str) -> SnapshotDeleted:
    """Force-detach everywhere, then delete. Already gone is success (the state asked for).

    The secondary copy, if any, is CloudStack's to remove (its storage cleanup owns it).
    """
    name = naming.snapshot(snapshot_uuid)
    existed = drop_snapshot(ctx.conn(ctx.pool(pool)), name)
    return SnapshotDeleted(snapshot_uuid.lower(), name, existed)


STOPPED_STATES = ("Stopped", "Destroyed", "Expunging")


def refuse_if_running(ctx: DriverContext, vm_id: str | None, what: str) -> None:
    """A revert rewrites the disks under the VM's feet: only a stopped VM (or none) is safe."""
    if vm_id:
        refuse_running_vm(ctx.cloudstack.vm(vm_id), what)


def refuse_running_vm(vm: VirtualMachine | None, what: str) -> None:
    if vm is not None and vm.state not in STOPPED_STATES:
        raise Conflict(f"{what}: VM {vm.name or vm.id} is {vm.state}; stop it first")


def revert_snapshot(ctx: DriverContext, *, volume_uuid: str, snapshot_uuid: str) -> Reverted:
    """Roll a volume back to one of its snapshots, keeping its iops limit and tags.

    Force-detaching first is safe because the VM is checked to be stopped: what is left
    attached is a stale attachment of a host that ran it last.
    """
    snap = naming.snapshot(snapshot_uuid)
    src = storpool_volume(ctx, volume_uuid)
    refuse_if_running(ctx, src.cs.vm_id, f"revert of volume {volume_uuid}")
    conn = ctx.conn(src.pool)
    summary = conn.volume(src.name)
    if summary is None:
        raise NotFound(f"volume_uuid: volume {src.name} is not on StorPool")
    iops, kept = revert_volume(conn, src, snap, summary)
    return Reverted(volume_uuid.lower(), src.name, snap, iops, kept)


def revert_volume(conn: StorPoolConn, src: SourceVolume, snapshot: str, summary: Any, *,
                  detach: bool = True) -> tuple[int, dict[str, str]]:
    """Detach (unless the caller detached already), VolumeRevert, then re-apply iops
    (CloudStack's max IOPS when it has one, else the limit the volume had) and tags. Shared by
    volume and VM-snapshot reverts."""
    iops = src.cs.max_iops if src.cs.max_iops is not None else offerings.iops_of(summary)
    kept = restore_tags(summary.tags)
    if detach:
        conn.detach_everywhere(src.name)
    try:
        conn.volume_revert(src.name, snapshot)
    except SpNotFound:
        raise NotFound(f"snapshot: {snapshot} is not on StorPool") from None
    conn.volume_update(src.name, iops=iops, tags=kept or None)
    return iops, kept


# ---------------------------------------------------------------------------- from snapshots


def volume_from_snapshot(
    ctx: DriverContext,
    *,
    pool: str,
    snapshot_uuid: str,
    volume_uuid: str,
    size: int | None = None,
    iops: Iops | None = None,
    template: str | None = None,
    secondary: SecondaryLocation | None = None,
) -> VolumeFromSnapshot:
    """A new volume with the snapshot's content.

    On StorPool: one VolumeCreate with `parent` (nothing copied). `iops` defaults to the source
    volume's max IOPS in CloudStack (else the snapshot's limit is inherited); `template` to
    the pool's. If the StorPool snapshot is gone and `secondary` names its backup, an empty
    volume is created and an agent copies the backup in; a failed copy deletes that volume.
    """
    spec = ctx.pool(pool)
    name = naming.volume(volume_uuid)
    snap = naming.snapshot(snapshot_uuid)
    if size is not None:
        names.size(size, "size")
    if secondary is not None:
        secondary.check()
    # Asked of CloudStack at most once, and only when iops or size must come from it.
    source_volume = functools.cache(lambda: _source_volume_of(ctx, snapshot_uuid))
    if iops is None:
        iops = _source_iops(source_volume())
    conn = ctx.conn(spec)
    vol_tags = volumes.volume_tags(naming.check_uuid(volume_uuid, "volume_uuid"), spec)
    tmpl = template or spec.template
    try:
        created = conn.volume_create(name=name, parent=snap, size=size, iops=iops, template=tmpl, tags=vol_tags)
        return VolumeFromSnapshot(volume_uuid.lower(), created.name, created.global_id, created.path, "storpool", 0,
                                  created.recovered)
    except SpExists:
        return _existing_volume(conn, name, volume_uuid, "storpool")
    except SpNotFound:
        if conn.snapshot(snap) is not None:
            raise  # something else is missing (the template): not a case for the secondary copy
        if secondary is None:
            raise NotFound(f"snapshot_uuid: snapshot {snap} is not on StorPool and no secondary copy was given") from None
        log.info("snapshot %s is gone from StorPool; restoring volume %s from %s", snap, name, secondary.path)
    if size is None:
        size = _source_size(source_volume())
    try:
        created = conn.volume_create(name=name, size=size, iops=iops, template=tmpl, tags=vol_tags)
    except SpExists:
        return _existing_volume(conn, name, volume_uuid, "secondary")
    try:
        where = secondary
        with agent_refusals("secondary"):
            agent, res = on_any_host(ctx, spec, lambda c: c.copy_to_volume(
                store=where.store, path=where.path, volume=created.ref, target_is_zero=True, progress=ctx.progress))
    except Exception as exc:
        raise undo_and_fail(f"copy of the secondary copy {secondary.path} into volume {volume_uuid} failed", exc,
                            f"the new volume {name} was removed", lambda: conn.volume_delete(name, missing_ok=True)) from exc
    return VolumeFromSnapshot(volume_uuid.lower(), created.name, created.global_id, created.path, "secondary",
                              int(res.get("virtual_size", 0)), created.recovered, agent)


def _existing_volume(conn: StorPoolConn, name: str, volume_uuid: str, source: str) -> VolumeFromSnapshot:
    found = conn.volume(name)
    if not tags.owned_by(found, volume_uuid.lower()):
        raise Conflict(f"volume_uuid: StorPool already has an object named {name} that is not this volume")
    return VolumeFromSnapshot(volume_uuid.lower(), found.name, found.globalId, names.BYID_PREFIX + found.globalId,
                              source, 0, True)


def _source_volume_of(ctx: DriverContext, snapshot_uuid: str) -> Volume | None:
    cs_snap = ctx.cloudstack.snapshot(snapshot_uuid)
    if cs_snap is None or not cs_snap.volume_id:
        return None
    return ctx.cloudstack.volume(cs_snap.volume_id)


def _source_iops(vol: Volume | None) -> int | None:
    """The source volume's max IOPS; None (inherit the snapshot's) when CloudStack has no value."""
    return vol.max_iops if vol is not None else None


def _source_size(vol: Volume | None) -> int:
    if vol is None or vol.size <= 0:
        raise ValidationError("size", "needed: the snapshot's source volume is unknown to CloudStack")
    return names.size(vol.size, "size")


def template_from_snapshot(
    ctx: DriverContext,
    *,
    pool: str,
    template_uuid: str,
    snapshot_uuid: str | None = None,
    volume_uuid: str | None = None,
    secondary: SecondaryLocation | None = None,
) -> TemplateFromSnapshot:
    """Make a template's cached snapshot on `pool` straight from a StorPool snapshot or volume.

    Nothing is copied on StorPool: Driver I's template cache (`templates.ensure_cached`) clones
    the snapshot (`parent`) or the volume (`baseOn`) and snapshots the clone under the cache's
    name, so a VM from this template is one VolumeCreate even the first time. When `secondary`
    is given, an agent also writes the template's qcow2 there (CloudStack keeps that copy, e.g.
    to deploy in other zones); if that fails the cache is removed again and the call fails.
    """
    if (snapshot_uuid is None) == (volume_uuid is None):
        raise ValidationError("snapshot_uuid", "give exactly one of snapshot_uuid and volume_uuid")
    spec = ctx.pool(pool)
    if not spec.uuid:
        raise ValidationError("pool", "the pool has no CloudStack uuid: the template cache is named after it")
    cache = naming.template_cache(template_uuid, spec.uuid)
    if secondary is not None:
        secondary.check()
    conn = ctx.conn(spec)
    from_volume = from_snapshot = None
    if volume_uuid is not None:
        src_vol = storpool_volume(ctx, volume_uuid)
        if ctx.conn(src_vol.pool) is not conn:
            raise ValidationError("volume_uuid", "the volume is on another StorPool cluster than the pool")
        source = from_volume = src_vol.name
    else:
        source = from_snapshot = naming.snapshot(str(snapshot_uuid))
    cached = templates.cached(ctx, spec, template_uuid)
    made_before = cached is not None
    if cached is None:
        try:
            cached = templates.ensure_cached(ctx, spec, template_uuid, from_snapshot=from_snapshot,
                                             from_volume=from_volume, known_missing=True)
        except SpNotFound:
            if from_snapshot is not None and conn.snapshot(from_snapshot) is None:
                raise NotFound(f"snapshot_uuid: snapshot {from_snapshot} is not on StorPool") from None
            raise

    copy = None
    if secondary is not None:
        try:
            copy = backup_to_secondary(ctx, spec, cached.name, secondary)
        except Exception as exc:
            if made_before:
                raise  # the cache was there before this call (root volumes may use it): not ours to undo
            raise undo_and_fail(f"writing template {template_uuid} to secondary storage failed", exc,
                                f"the cached template {cache} was removed", lambda: drop_snapshot(conn, cache)) from exc
    return TemplateFromSnapshot(template_uuid.lower(), spec.uuid, cached.name, cached.global_id,
                                names.BYID_PREFIX + cached.global_id, cached.size or (copy.virtual_size if copy else None),
                                source, copy, made_before)
