"""A volume snapshot copied to a StorPool pool of another location (another zone's StorPool).

What CloudStack's copySnapshot (and createSnapshot with `zoneids`) asks of the StorPool
snapshot strategy when the destination is StorPool primary storage (StorPoolSnapshotStrategy.
copySnapshot). Each pool's StorPool location name is its `sp.cluster.location` (storage-pool
scope; the StorPool host listener sets it from `storpool location list`):

1. the source location exports the snapshot to the destination's location (SnapshotExport);
2. the destination location copies it (SnapshotFromRemote: anonymous, in the destination pool's
   template, tagged `cs=snapshot` and `uuid=<snapshot uuid>` as the Java plugin tags it), which
   keeps the snapshot's global id, so its CloudStack path is the source's path;
3. SnapshotReconcile of the copy on the destination.

A failed step undoes the earlier ones (the copy is deleted, the export revoked) before the
error is reported; a retry finds a copy an earlier attempt made by its global id and finishes
it. The export stays while the copy's data arrives (`recoveringFromRemote`); an exported
snapshot cannot be deleted, so `release_exports` (the service's periodic task on
`storpool.snapshot.recovery.from.remote.check`, as the Java plugin's StorPoolSnapshotRecoveryCheck)
revokes each export whose copy is complete.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cloudstack_storpool import names
from cloudstack_storpool.driver import naming, tags
from cloudstack_storpool.driver.undo import undo_and_fail
from cloudstack_storpool.errors import NotFound, SpBusy, StorPoolError, ValidationError
from cloudstack_storpool.uuids import check_uuid

if TYPE_CHECKING:
    from cloudstack_storpool.driver.context import DriverContext
    from cloudstack_storpool.poolconfig import PoolSpec
    from cloudstack_storpool.spconn import StorPoolConn

log = logging.getLogger(__name__)

LOCATION_SETTING = "sp.cluster.location"
RECOVERY_SETTING = "storpool.snapshot.recovery.from.remote.check"


@dataclass(frozen=True)
class SnapshotCopied:
    snapshot_uuid: str
    pool: str
    """The destination pool's uuid."""
    global_id: str
    path: str
    """What CloudStack keeps for the copy: `/dev/storpool-byid/<globalId>`, the source's path."""
    source_location: str
    location: str
    """The destination's StorPool location."""
    recovering: bool
    """The copy's data is still arriving (the export stays until it is complete)."""
    recovered: bool
    """A retry found the copy an earlier attempt made."""


@dataclass(frozen=True)
class ExportReleased:
    global_id: str
    location: str
    pool: str
    """The pool whose StorPool cluster exported the snapshot."""


def pool_location(ctx: DriverContext, spec: PoolSpec, field: str) -> str:
    """The pool's StorPool location name (`sp.cluster.location`); ValidationError naming `field`
    when the pool has none (the Java plugin then answers "not in the right location")."""
    value = ctx.settings.get(LOCATION_SETTING, pool=spec.uuid or None)
    if not value:
        raise ValidationError(field, f"pool {spec.name or spec.uuid} has no {LOCATION_SETTING}: "
                                     "its StorPool location is not known")
    return names.location_name(str(value), field)


def copy_snapshot(ctx: DriverContext, *, snapshot_uuid: str, source_pool: str, pool: str,
                  path: str | None = None) -> SnapshotCopied:
    """Copy a snapshot of `source_pool` to `pool`, a StorPool pool of another location.

    `path` is the snapshot's path as CloudStack keeps it (snapshot_details); without it the
    project's name for the snapshot is used.
    """
    uuid = check_uuid(snapshot_uuid, "snapshot_uuid")
    src_spec, dst_spec = ctx.pool(source_pool), ctx.pool(pool)
    if (src_spec.uuid, src_spec.name) == (dst_spec.uuid, dst_spec.name):
        raise ValidationError("pool", "the destination is the snapshot's own pool")
    dst_loc = pool_location(ctx, dst_spec, "pool")
    src_loc = pool_location(ctx, src_spec, "source_pool")
    if src_loc == dst_loc:
        raise ValidationError("pool", f"pool {dst_spec.name} is in the snapshot's own StorPool location {dst_loc}: "
                                      "copies go between locations")
    src_conn, dst_conn = ctx.conn(src_spec), ctx.conn(dst_spec)
    name = names.path_to_name(path) if path else naming.snapshot(uuid)
    found = src_conn.snapshot(name)
    if found is None or found.deleted:
        raise NotFound(f"snapshot_uuid: snapshot {name} is not on pool {src_spec.name}")
    gid = found.global_id
    ref = "~" + gid
    recovered = dst_conn.snapshot(ref) is not None
    if not recovered:
        src_conn.snapshot_export(ref, dst_loc)
        try:
            _receive(dst_conn, gid, src_loc, dst_spec.template, uuid)
        except Exception as exc:
            raise undo_and_fail(f"copy of snapshot {uuid} to pool {dst_spec.name} failed", exc,
                                f"its export to {dst_loc} was revoked",
                                lambda: src_conn.snapshot_unexport(ref, dst_loc, force=True)) from exc
    try:
        dst_conn.snapshot_reconcile(ref)
    except Exception as exc:
        raise undo_and_fail(f"reconcile of the copy of snapshot {uuid} on pool {dst_spec.name} failed", exc,
                            f"the copy was deleted and its export to {dst_loc} revoked",
                            lambda: _drop_copy(src_conn, dst_conn, ref, dst_loc)) from exc
    copy = dst_conn.snapshot(ref)
    log.info("snapshot %s (%s) copied from %s to pool %s in %s", uuid, gid, src_loc, dst_spec.name, dst_loc)
    return SnapshotCopied(uuid, dst_spec.uuid, gid, names.BYID_PREFIX + gid, src_loc, dst_loc,
                          bool(copy is not None and copy.recovering), recovered)


def _receive(dst_conn: StorPoolConn, gid: str, src_loc: str, template: str, uuid: str) -> None:
    """SnapshotFromRemote; after a failure whose answer may have been lost, the copy found by
    its global id means it was made."""
    try:
        dst_conn.snapshot_from_remote(gid, src_loc, template=template, tags={"cs": tags.SNAPSHOT, "uuid": uuid})
    except StorPoolError:
        if dst_conn.snapshot("~" + gid) is None:
            raise


def _drop_copy(src_conn: StorPoolConn, dst_conn: StorPoolConn, ref: str, dst_loc: str) -> None:
    dst_conn.snapshot_delete(ref)
    src_conn.snapshot_unexport(ref, dst_loc, force=True)


STILL_EXPORTED = "still exported"
"""What StorPool's refusal to delete an exported snapshot says (the Java plugin looks for it too)."""


def is_still_exported(exc: StorPoolError) -> bool:
    return STILL_EXPORTED in exc.descr


def release_for_delete(conn: StorPoolConn, name: str) -> list[str]:
    """Before deleting a snapshot StorPool keeps because it is exported: revoke its exports
    whose copies are complete (StorPool refuses, `busy`, while a copy is still arriving: that
    is reported, naming the location). Returns the locations released."""
    found = conn.snapshot(name)
    if found is None:
        return []
    released = []
    for export in conn.exports():
        if export.global_id != found.global_id:
            continue
        try:
            conn.snapshot_unexport("~" + found.global_id, export.location)
        except SpBusy:
            raise SpBusy("busy", f"snapshot {name} is still being copied to location {export.location}: "
                                 "delete it once the copy is complete", query="SnapshotUnexport") from None
        released.append(export.location)
    return released


def release_exports(ctx: DriverContext) -> list[ExportReleased]:
    """Revoke the exports whose copy in the destination location is complete.

    Only exports this plugin made are touched: the copy in a pool of that location carries
    `cs=snapshot` and a `uuid` tag. An export whose copy is still arriving, or whose location
    has no pool here, stays. One ExportsList per StorPool endpoint."""
    by_location: dict[str, PoolSpec] = {}
    for spec in ctx.pools.pools:
        loc = ctx.settings.get(LOCATION_SETTING, pool=spec.uuid or None)
        if loc:
            by_location.setdefault(str(loc), spec)
    released: list[ExportReleased] = []
    seen: set[str] = set()
    for spec in ctx.pools.pools:
        if spec.endpoint in seen:
            continue
        seen.add(spec.endpoint)
        conn = ctx.conn(spec)
        for export in conn.exports():
            dest = by_location.get(export.location)
            if dest is None or dest.endpoint == spec.endpoint:
                continue
            copy = ctx.conn(dest).snapshot("~" + export.global_id)
            if copy is None or copy.recovering or copy.tags.get("cs") != tags.SNAPSHOT or not copy.tags.get("uuid"):
                continue
            if conn.snapshot_unexport("~" + export.global_id, export.location):
                released.append(ExportReleased(export.global_id, export.location, spec.uuid))
    if released:
        log.info("released %d snapshot export(s) whose copies are complete", len(released))
    return released
