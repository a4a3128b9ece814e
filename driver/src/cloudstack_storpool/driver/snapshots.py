"""Volume snapshots, the secondary-storage bypass, and what is made from snapshots.

A StorPool snapshot is a metadata operation (no data copied), so the driver always takes one
and keeps it: later volumes and templates are children of it and cost one API call. Whether a
qcow2 copy also goes to CloudStack's secondary storage is decided per snapshot by two keys,
read through the settings cache at the moment of the snapshot (an operator's change applies to
the next snapshot without a restart), see `bypass_decision`.

Every object made here has a deterministic name derived from CloudStack uuids, so a retried
request finds what the first attempt made instead of making a second one, and every failure
path removes what this call created: a failed backup leaves neither a StorPool snapshot (the
CloudStack snapshot is reported failed) nor a partial file (the agent writes to a temporary
name and renames on success).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from cloudstack_storpool import names
from cloudstack_storpool.bounds import Iops
from cloudstack_storpool.driver import (
    identity,
    locate,
    naming,
    offerings,
    pools,
    snapshotcopy,
    spclusters,
    tags,
    templates,
)
from cloudstack_storpool.driver.removal import drop_snapshot
from cloudstack_storpool.driver.revert import refuse_running, revert_volume
from cloudstack_storpool.driver.secondary import SecondaryLocation, agent_refusals
from cloudstack_storpool.driver.undo import undo_and_fail
from cloudstack_storpool.errors import NotFound, SpExists, SpNotFound, StorPoolError, ValidationError
from cloudstack_storpool.uuids import Uuid, check_uuid

if TYPE_CHECKING:
    from cloudstack_storpool.agentapi.client import AgentClient
    from cloudstack_storpool.cloudstack.records import Volume
    from cloudstack_storpool.driver.context import DriverContext
    from cloudstack_storpool.poolconfig import PoolSpec
    from cloudstack_storpool.spconn import Created, StorPoolConn

log = logging.getLogger(__name__)

BYPASS_SETTING = "sp.bypass.secondary.storage"
BACKUP_SETTING = "snapshot.backup.to.secondary"

T = TypeVar("T")


# ---------------------------------------------------------------------------- results


@dataclass(frozen=True)
class SecondaryCopy:
    """A qcow2 an agent wrote to secondary storage."""

    store: str
    path: str
    format: str
    virtual_size: int
    physical_size: int
    agent: str
    """The agent that wrote it."""


@dataclass(frozen=True)
class SnapshotInfo:
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
    """True: kept on StorPool only, no copy on secondary storage."""
    decided_by: str
    """The setting that decided `bypassed` (see `bypass_decision`)."""
    backup: SecondaryCopy | None
    recovered: bool
    """A retry found the snapshot taken by an earlier attempt instead of taking a second one."""


@dataclass(frozen=True)
class SnapshotDeleted:
    uuid: str
    name: str
    existed: bool


@dataclass(frozen=True)
class Reverted:
    volume_uuid: Uuid
    volume: str
    snapshot: str
    iops: int
    tags: dict[str, str]


@dataclass(frozen=True)
class VolumeFromSnapshot:
    uuid: str
    name: str
    global_id: str
    path: str
    source: str
    """`storpool` (a child of the snapshot, nothing copied) or `secondary` (copied by an agent)."""
    copied_bytes: int
    recovered: bool
    template: str
    """The StorPool template it was placed on (from the offerings, else the pool's)."""
    iops: int | None
    """The IOPS limit written (None: the snapshot's is inherited)."""
    qos_class: str | None
    agent: str | None = None
    """The agent that copied the data in (secondary source only)."""


@dataclass(frozen=True)
class TemplateFromSnapshot:
    template_uuid: Uuid
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


# ---------------------------------------------------------------------------- helpers


def on_any_host(ctx: DriverContext, pool: PoolSpec, work: Callable[[AgentClient], T],
                clusters: Collection[str] | None = None) -> tuple[str, T]:
    """Run a copy between StorPool and secondary storage on any Up host of the pool's zone
    (the agents' rotation, moving on while agents are unreachable); returns which agent ran it.
    Any host will do (of the CloudStack `clusters` when given: the hosts that see the object's
    StorPool cluster): the object is attached there only for the copy."""
    used: list[str] = []

    def run(client: AgentClient) -> T:
        used.append(client.base_url)
        return work(client)

    result = ctx.agents.run_on_pool(pool, run, clusters)
    return used[-1], result


def backup_to_secondary(ctx: DriverContext, pool: PoolSpec, snapshot: str, where: SecondaryLocation,
                        global_id: str | None = None) -> SecondaryCopy:
    """A StorPool snapshot -> qcow2 at `where`, by an agent (temporary file, renamed when whole);
    with several StorPool clusters, an agent of a host that sees the snapshot's (`global_id`)."""
    with agent_refusals("secondary"):
        agent, res = on_any_host(
            ctx, pool, lambda c: c.backup_snapshot(snapshot=snapshot, store=where.store, path=where.path,
                                               progress=ctx.progress), spclusters.holding(ctx, pool, global_id))
    return SecondaryCopy(where.store, where.path, str(res.get("format", "qcow2")), int(res.get("virtual_size", 0)),
                         int(res.get("physical_size", 0)), agent)


# ---------------------------------------------------------------------------- take / delete / revert


@dataclass(frozen=True)
class BypassDecision:
    bypassed: bool
    decided_by: str


def bypass_decision(ctx: DriverContext, pool_uuid: Uuid | None) -> BypassDecision:
    """Keep the snapshot on StorPool only, or also back it up to secondary storage?

    Two keys say it, in opposite senses: the StorPool plugin's `sp.bypass.secondary.storage`
    (true = StorPool only; what older Java plugins read) and CloudStack's own
    `snapshot.backup.to.secondary` (false = primary only; what current CloudStack reads). Either
    one asking for StorPool only decides, the plugin's key first: an operator who set either
    gets what they asked for, whichever CloudStack version they learnt it from. Only when both
    ask for a backup (the defaults) is the snapshot copied; CloudStack's key is then reported as
    the deciding one, being the one a current management server acts on.
    """
    if ctx.settings.get(BYPASS_SETTING, pool=pool_uuid):
        return BypassDecision(True, BYPASS_SETTING)
    backup = ctx.settings.get(BACKUP_SETTING, pool=pool_uuid)
    return BypassDecision(not backup, BACKUP_SETTING)


def take_snapshot(
    ctx: DriverContext,
    *,
    volume_uuid: Uuid,
    snapshot_uuid: Uuid,
    secondary: SecondaryLocation | None = None,
    encrypted: bool = False,
) -> SnapshotInfo:
    """Snapshot a volume on StorPool and, unless bypassed, back it up to secondary storage.

    `secondary` is where CloudStack wants the backup; it is required when the bypass is off.
    Snapshots of encrypted volumes stay on StorPool only: a qcow2 of the raw device would hold
    ciphertext CloudStack cannot read back, so they are refused unless the bypass is on.
    """
    name = naming.snapshot(snapshot_uuid)
    src = identity.locate(ctx, volume_uuid)
    decision = bypass_decision(ctx, src.pool.uuid or None)
    bypass = decision.bypassed
    if not bypass:
        keep_on_primary = f"{BYPASS_SETTING}=true or {BACKUP_SETTING}=false"
        if encrypted:
            raise ValidationError(
                "encrypted", f"snapshots of encrypted volumes must stay on StorPool only ({keep_on_primary})"
            )
        if secondary is None:
            raise ValidationError("secondary", f"a secondary-storage location is required unless {keep_on_primary}")
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
        existing = identity.ours(conn.snapshot(name), snapshot_uuid.lower(), f"snapshot {name}", "snapshot_uuid")
        gid, recovered = existing.global_id, True
    backup = None
    if not bypass:
        assert secondary is not None
        try:
            backup = backup_to_secondary(ctx, src.pool, name, secondary, gid)
        except Exception as exc:
            raise undo_and_fail(f"backup of snapshot {snapshot_uuid} to secondary storage failed", exc,
                                f"the StorPool snapshot {name} was removed", lambda: drop_snapshot(conn, name)) from exc
    return SnapshotInfo(snapshot_uuid.lower(), name, gid, names.BYID_PREFIX + gid, src.name, src.pool.uuid,
                        bypass, decision.decided_by, backup, recovered)


def delete_snapshot(ctx: DriverContext, *, pool: str, snapshot_uuid: Uuid, path: str | None = None) -> SnapshotDeleted:
    """Force-detach everywhere, then delete. Already gone is success (the state asked for).

    `path` is what CloudStack stored for the snapshot (`/dev/storpool-byid/<globalId>`); without
    it the project's name is tried, then the Java plugin's snapshot of that uuid. The secondary
    copy, if any, is CloudStack's to remove (its storage cleanup owns it). A snapshot copied to
    another location is exported, which StorPool refuses to delete: its exports whose copies are
    complete are revoked first (a copy still arriving is reported, `busy`).
    """
    conn = ctx.conn(ctx.pool(pool))
    name = names.path_to_name(path) if path else naming.snapshot(snapshot_uuid)
    try:
        existed = drop_snapshot(conn, name)
    except StorPoolError as exc:
        # Copied to another location (copy_snapshot): StorPool keeps it while it is exported.
        if not snapshotcopy.is_still_exported(exc) or not snapshotcopy.release_for_delete(conn, name):
            raise
        existed = drop_snapshot(conn, name)
    if not existed and not path:
        java = locate.java_snapshot(conn, snapshot_uuid)
        if java is not None:
            name, existed = java.ref, drop_snapshot(conn, java.ref)
    return SnapshotDeleted(snapshot_uuid.lower(), name, existed)


def revert_snapshot(ctx: DriverContext, *, volume_uuid: Uuid, snapshot_uuid: Uuid, path: str | None = None) -> Reverted:
    """Roll a volume back to one of its snapshots, keeping its iops limit and tags.

    `path` is the snapshot's path as CloudStack stored it (else the project's name, then the
    Java plugin's snapshot of that uuid). Force-detaching first is safe because the VM is
    checked to be stopped: what is left attached is a stale attachment of a host that ran it last.
    """
    src = identity.locate(ctx, volume_uuid)
    if src.cs.vm_id:
        refuse_running(ctx.cloudstack.vm(src.cs.vm_id), f"revert of volume {volume_uuid}")
    conn = ctx.conn(src.pool)
    summary = conn.volume(src.name)
    if summary is None:
        raise NotFound(f"volume_uuid: volume {src.name} is not on StorPool")

    def revert(snap: str) -> tuple[str, int, dict[str, str]]:
        return (snap, *revert_volume(conn, src, snap, summary))

    try:
        snap, iops, kept = locate.on_snapshot(conn, snapshot_uuid, path, revert)
    except SpNotFound:
        raise NotFound(f"snapshot_uuid: snapshot {snapshot_uuid} is not on StorPool") from None
    return Reverted(volume_uuid.lower(), src.name, snap, iops, kept)


# ---------------------------------------------------------------------------- from snapshots


def volume_from_snapshot(
    ctx: DriverContext,
    *,
    pool: str,
    snapshot_uuid: Uuid,
    volume_uuid: Uuid,
    size: int | None = None,
    volume_type: str = offerings.DATADISK,
    disk_offering_id: str | None = None,
    service_offering_id: str | None = None,
    iops: Iops | None = None,
    secondary: SecondaryLocation | None = None,
    path: str | None = None,
    cluster_id: str | None = None,
) -> VolumeFromSnapshot:
    """A new volume with the snapshot's content, placed like any create.

    On StorPool: one VolumeCreate with `parent` (nothing copied). Template, `qc` and iops come
    from the offerings and the custom `iops` exactly as for `volumes.create`
    (`offerings.resolve`); when neither sets an IOPS limit, the source volume's max IOPS in
    CloudStack applies (else the snapshot's limit is inherited). If the StorPool snapshot is
    gone and `secondary` names its backup, an empty volume is created and an agent copies the
    backup in; a failed copy deletes that volume. `path` is the snapshot's path as CloudStack
    stored it (else the project's name, then the Java plugin's snapshot of that uuid).
    `cluster_id` (the CloudStack cluster of the VM) picks the StorPool cluster as for
    `volumes.create`; the snapshot must be in that cluster (StorPool clones within a cluster).
    """
    spec = ctx.pool(pool)
    uuid = check_uuid(volume_uuid, "volume_uuid")
    if size is not None:
        names.size(size, "size")
    if secondary is not None:
        secondary.check()
    placement = offerings.resolve(ctx, spec, volume_type=volume_type, disk_offering_id=disk_offering_id,
                                  service_offering_id=service_offering_id, custom_iops=iops, size=size)
    # Asked of CloudStack at most once, and only when iops or size must come from it.
    source_volume = functools.cache(lambda: _source_volume_of(ctx, snapshot_uuid))
    limit = placement.iops if placement.iops is not None else _source_iops(source_volume())
    where = spclusters.target(ctx, spec, cluster_id)
    new = _NewVolume(where.conn, uuid, naming.volume(uuid), identity.volume_tags(uuid, spec, placement),
                     placement.template, limit, placement.qos_class, where.remote)
    made = _clone_snapshot(new, snapshot_uuid, path, size, secondary)
    if made is not None:
        return made
    assert secondary is not None
    log.info("snapshot %s is gone from StorPool; restoring volume %s from %s", snapshot_uuid, new.name, secondary.path)
    return _restore_from_secondary(ctx, spec, new, secondary, size if size is not None else _source_size(source_volume()),
                                   spclusters.copy_clusters(ctx, spec, where))


@dataclass(frozen=True)
class _NewVolume:
    """The volume `volume_from_snapshot` makes, whichever way its data comes."""

    conn: StorPoolConn
    uuid: str
    name: str
    tags: dict[str, str]
    template: str
    iops: int | None
    qos_class: str | None
    remote: str | None = None
    """`RemoteCommand/` cluster name of the target StorPool cluster (`spclusters.Target`)."""

    def create(self, source: str, *, size: int | None, parent: str | None = None) -> VolumeFromSnapshot | Created:
        """One VolumeCreate; a volume this request made before is returned as recovered."""
        try:
            return self.conn.volume_create(name=self.name, parent=parent, size=size, iops=self.iops,
                                           template=self.template, tags=self.tags, cluster=self.remote)
        except SpExists:
            found = identity.existing_volume(self.conn, self.name, self.uuid)
            return self.result(found.name, found.global_id, source, 0, True)

    def result(self, name: str, global_id: str, source: str, copied: int, recovered: bool,
               agent: str | None = None) -> VolumeFromSnapshot:
        return VolumeFromSnapshot(self.uuid, name, global_id, names.BYID_PREFIX + global_id, source, copied,
                                  recovered, self.template, self.iops, self.qos_class, agent)


def _clone_snapshot(new: _NewVolume, snapshot_uuid: Uuid, path: str | None, size: int | None,
                    secondary: SecondaryLocation | None) -> VolumeFromSnapshot | None:
    """The volume as a child of the StorPool snapshot (found by `path`, the project's name or
    the Java plugin's tags); None when the snapshot is gone and its secondary copy can stand in."""
    snap = names.path_to_name(path) if path else naming.snapshot(snapshot_uuid)
    try:
        # The project's own snapshot costs no extra call; a Java-made one is looked up only on a miss.
        made = locate.on_snapshot(new.conn, snapshot_uuid, path,
                                  lambda parent: new.create("storpool", size=size, parent=parent))
    except SpNotFound:
        there = new.conn.snapshot(snap)
        if there is not None and not there.deleted:
            raise  # something else is missing (the template): not a case for the secondary copy
        if secondary is None:
            raise NotFound(f"snapshot_uuid: snapshot {snap} is not on StorPool and no secondary copy was given") from None
        return None
    if isinstance(made, VolumeFromSnapshot):
        return made
    return new.result(made.name, made.global_id, "storpool", 0, made.recovered)


def _restore_from_secondary(ctx: DriverContext, spec: PoolSpec, new: _NewVolume, where: SecondaryLocation,
                            size: int, clusters: Collection[str] | None) -> VolumeFromSnapshot:
    """An empty volume, then an agent copies the snapshot's backup in; a failed copy removes it."""
    made = new.create("secondary", size=size)
    if isinstance(made, VolumeFromSnapshot):
        return made
    try:
        with agent_refusals("secondary"):
            agent, res = on_any_host(ctx, spec, lambda c: c.copy_to_volume(
                store=where.store, path=where.path, volume=made.ref, target_is_zero=True, progress=ctx.progress),
                clusters)
    except Exception as exc:
        raise undo_and_fail(f"copy of the secondary copy {where.path} into volume {new.uuid} failed", exc,
                            f"the new volume {new.name} was removed",
                            lambda: new.conn.volume_delete(made.ref, missing_ok=True)) from exc
    return new.result(made.name, made.global_id, "secondary", int(res.get("virtual_size", 0)), made.recovered, agent)


def _source_volume_of(ctx: DriverContext, snapshot_uuid: Uuid) -> Volume | None:
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
    template_uuid: Uuid,
    snapshot_uuid: Uuid | None = None,
    volume_uuid: Uuid | None = None,
    secondary: SecondaryLocation | None = None,
    snapshot_path: str | None = None,
) -> TemplateFromSnapshot:
    """Make a template's cached snapshot on `pool` straight from a StorPool snapshot or volume.

    Nothing is copied on StorPool: the template cache (`templates.ensure_cached`) clones the
    snapshot (`parent`) or the volume (`baseOn`) and snapshots the clone under the cache's
    name, so a VM from this template is one VolumeCreate even the first time. When `secondary`
    is given, an agent also writes the template's qcow2 there (CloudStack keeps that copy, e.g.
    to deploy in other zones); if that fails the cache is removed again (when this call made
    it) and the call fails.
    """
    if (snapshot_uuid is None) == (volume_uuid is None):
        raise ValidationError("snapshot_uuid", "give exactly one of snapshot_uuid and volume_uuid")
    spec = ctx.pool(pool)
    if not spec.uuid:
        raise ValidationError("pool", "the pool has no CloudStack uuid: the template cache is named after it")
    if secondary is not None:
        secondary.check()
    from_volume = _template_source_volume(ctx, spec, volume_uuid)
    from_snapshot = (locate.snapshot_name(ctx.conn(spec), str(snapshot_uuid), snapshot_path, "snapshot_path")
                     if snapshot_uuid is not None else None)
    try:
        cached = templates.ensure_cached(ctx, spec, template_uuid, from_snapshot=from_snapshot, from_volume=from_volume)
    except SpNotFound:
        if from_snapshot is not None and ctx.conn(spec).snapshot(from_snapshot) is None:
            raise NotFound(f"snapshot_uuid: snapshot {from_snapshot} is not on StorPool") from None
        raise
    copy = _template_to_secondary(ctx, spec, cached, secondary) if secondary is not None else None
    return TemplateFromSnapshot(template_uuid.lower(), spec.uuid, cached.name, cached.global_id,
                                names.BYID_PREFIX + cached.global_id, cached.size or (copy.virtual_size if copy else None),
                                str(from_volume or from_snapshot), copy, not cached.filled)


def _template_source_volume(ctx: DriverContext, spec: PoolSpec, volume_uuid: Uuid | None) -> str | None:
    """The StorPool name of the volume a template is made from; it must be on the pool's cluster."""
    if volume_uuid is None:
        return None
    src = identity.locate(ctx, volume_uuid)
    if ctx.conn(src.pool) is not ctx.conn(spec):
        raise ValidationError("volume_uuid", "the volume is on another StorPool cluster than the pool")
    return src.name


def _template_to_secondary(ctx: DriverContext, spec: PoolSpec, cached: templates.CachedTemplate,
                           where: SecondaryLocation) -> SecondaryCopy:
    """The template's qcow2 on secondary storage; a failure removes a cache this call made
    (one that was there before may already have root volumes: not ours to undo)."""
    try:
        return backup_to_secondary(ctx, spec, cached.name, where)
    except Exception as exc:
        if not cached.filled:
            raise
        raise undo_and_fail(f"writing template {cached.template_uuid} to secondary storage failed", exc,
                            f"the cached template {cached.name} was removed",
                            lambda: drop_snapshot(ctx.conn(spec), cached.name)) from exc
