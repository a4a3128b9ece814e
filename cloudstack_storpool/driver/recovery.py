"""Deleted volumes that can come back: list and restore delay-delete backups, report expiries.

With `storpool.delete.after.interval` > 0 (pool scope), deleting a volume first snapshots it with
StorPool's `deleteAfter` and tags `uuid=<volume uuid>, cs=delayDelete` (volumes.delete, as the
Java plugin does). StorPool itself deletes the snapshot when the time is up; until then this
module lists it and can restore the volume from it: one VolumeCreate with the backup as parent,
so nothing is copied and the restored volume reads exactly the data it held when deleted. The
restored volume gets its old name and tags back but a new globalId (so a new path).

The Java plugin's backups (StorPoolSnapshotDef: `{"deleteAfter": N, "tags": {"cs": "delayDelete"}}`)
carry no `uuid` tag: only their `onVolume` names the deleted volume, as the path CloudStack kept
for it (`/dev/storpool-byid/<globalId>`). They are listed with that path (`volume_path`) and
restored by the volume's uuid *and* that path.

Every listed backup says whether `restore` can bring it back, and if not why (`not_restorable`):
a volume by that uuid or that path is live again (restored already, or never gone), or StorPool
is deleting the backup (its time is up).

StorPool is the only record: there is no table of deleted volumes here. The service's periodic
sync (`storpool.list.snapshots.delete.after.interval`) lists the backups once per cluster and
reports those that were there on its previous run and are gone now: the volume can no longer
be recovered. A backup expiring while the service is down is not reported (nothing is lost by
that: it was going to expire).

Costs: listing 1 SnapshotsList and 1 VolumesList per cluster; restore those and 1 VolumeCreate.
A volume that exists under the uuid makes the create fail (`objectExists`): the restore is refused.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cloudstack_storpool import names
from cloudstack_storpool.driver import naming, pools, stats, tags, volumes
from cloudstack_storpool.errors import Conflict, NotFound, SpExists, SpNotFound
from cloudstack_storpool.poolconfig import PoolSpec

if TYPE_CHECKING:
    from cloudstack_storpool.driver.context import DriverContext
    from cloudstack_storpool.sprecords import SpSnapshot, SpVolume

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeletedVolume:
    uuid: str | None
    """The deleted volume's CloudStack uuid."""
    pool: str | None
    backup: str
    """The delay-delete snapshot's API name (`~globalId` when anonymous)."""
    global_id: str
    size: int
    deleted_at: int | None
    """When the backup was taken (UNIX time)."""
    expires_at: int | None
    """When StorPool deletes the backup (`targetDeleteDate`); None: never."""
    volume_path: str | None = None
    """The deleted volume's path as CloudStack kept it, from the backup's `onVolume`: what names
    the volume of a backup the Java plugin made (no `uuid` tag)."""
    not_restorable: str | None = None
    """Why `restore` cannot bring it back; None: it can."""


@dataclass(frozen=True)
class SyncReport:
    listed: list[DeletedVolume] = field(default_factory=list)
    expired: list[DeletedVolume] = field(default_factory=list)
    """Backups seen by the previous sync and gone now: their volumes cannot come back."""


EXPIRED = "expired: StorPool is deleting the backup"


def _volume_path(s: SpSnapshot) -> str | None:
    """The path CloudStack kept for the volume a backup was taken of (its `onVolume`)."""
    if s.on_volume.startswith("~"):
        return names.BYID_PREFIX + s.on_volume[1:]
    if s.on_volume and not s.tags.get(tags.UUID):
        return names.LEGACY_PREFIX + s.on_volume
    return None


@dataclass(frozen=True)
class _Live:
    """What is live on a cluster, as far as restoring goes (from one VolumesList)."""

    uuids: set[str]
    """CloudStack uuids of the live volumes."""
    refs: set[str]
    """Their API names (`~globalId` and name)."""
    restored: dict[str, str]
    """Backup (`~globalId` or name) -> the live volume made from it (uuid, else `~globalId`)."""


def _live(volumes: list[SpVolume]) -> _Live:
    uuids = {v.tags[tags.UUID].lower() for v in volumes
             if v.tags.get(tags.UUID) and v.tags.get(tags.KIND) in (None, "", tags.VOLUME)}
    refs = {n for v in volumes for n in (v.ref, v.name) if n}
    restored = {v.parent: v.tags.get(tags.UUID) or v.ref for v in volumes if v.parent}
    return _Live(uuids, refs, restored)


def _why_not(s: SpSnapshot, uuid: str | None, live: _Live, now: float) -> str | None:
    if uuid and (uuid.lower() in live.uuids or naming.volume(uuid) in live.refs):
        return f"volume {uuid} exists (restored already, or not deleted)"
    if s.on_volume and s.on_volume in live.refs:
        return f"volume {s.on_volume} exists (not deleted)"
    child = live.restored.get(s.ref) or (live.restored.get(s.name) if s.name else None)
    if child is not None:
        return f"restored already as volume {child}"
    if s.delete_at and s.delete_at <= now:
        return EXPIRED
    return None


def _entry(s: SpSnapshot, pool: str | None, why_not: str | None) -> DeletedVolume:
    return DeletedVolume(
        uuid=s.tags.get(tags.UUID), pool=pool, backup=s.name if s.name and not s.name.startswith("~") else s.ref,
        global_id=s.global_id, size=s.size, deleted_at=int(s.created) or None, expires_at=int(s.delete_at) or None,
        volume_path=_volume_path(s), not_restorable=why_not,
    )


def _backups(ctx: DriverContext, spec: PoolSpec | None) -> list[tuple[DeletedVolume, Any]]:
    """(entry, StorPool summary) of every delay-delete backup of `spec` (default: every pool)."""
    out: list[tuple[DeletedVolume, Any]] = []
    for group in pools.by_cluster(ctx):
        if spec is not None and spec not in group:
            continue
        conn = ctx.conn(group[0])
        backups = conn.find_snapshots({tags.KIND: tags.DELAY_DELETE})
        if not backups:
            continue
        live = _live(conn.volumes())
        for s in backups:
            owner = stats.owner(s, group)
            if owner is not None and (spec is None or owner == spec.uuid):
                out.append((_entry(s, owner, _why_not(s, s.tags.get(tags.UUID), live, ctx.clock())), s))
    out.sort(key=lambda pair: (pair[0].deleted_at or 0, pair[0].global_id), reverse=True)
    return out


def deleted(ctx: DriverContext, pool: str | None = None) -> list[DeletedVolume]:
    """The deleted volumes of `pool` (default: every pool) whose backups StorPool still holds,
    newest first, each saying whether `restore` can bring it back (`not_restorable`): one
    SnapshotsList per cluster, and one VolumesList where there are backups."""
    return [d for d, _s in _backups(ctx, pools.resolve(ctx, pool) if pool else None)]


def restore(ctx: DriverContext, pool: PoolSpec | str, volume_uuid: str, *,
            backup: str | None = None, path: str | None = None) -> volumes.VolumeInfo:
    """Bring a deleted volume back from its newest backup (or from `backup`, a name or
    `~globalId` from `deleted`), with the content it had when deleted. `path` is the volume's
    path as CloudStack kept it: it finds the backups the Java plugin made, which carry no uuid.
    Refused while a volume with that uuid or path exists (Conflict) or when no backup is left
    (NotFound)."""
    spec = pools.resolve(ctx, pool)
    uuid = naming.check_uuid(volume_uuid, "volume_uuid")
    if backup is not None:
        names.snapshot_name(backup, "backup")
    source = names.path_to_name(path, "path") if path else None
    found = _backups(ctx, spec)
    candidates = [(d, s) for d, s in found
                  if (d.uuid == uuid or (source is not None and not d.uuid and s.on_volume == source))
                  and (backup is None or backup in (d.backup, "~" + d.global_id))]
    if not candidates:
        hint = ("; a backup the Java plugin made carries no uuid: give the volume's path as CloudStack kept it"
                if source is None and any(not d.uuid for d, _s in found) else "")
        raise NotFound(f"volume: no restorable backup of {uuid} on pool {spec.name} (expired, or never kept){hint}")
    chosen, snap = candidates[0]
    if chosen.not_restorable == EXPIRED:
        raise NotFound(f"volume: the backup of {uuid} expired")
    if chosen.not_restorable is not None:
        raise Conflict(f"{chosen.not_restorable} on pool {spec.name}; delete it first")
    template = snap.template or spec.template
    iops = snap.iops or None
    vtags = pools.identity_tags(uuid, tags.VOLUME, spec, qc=snap.tags.get(tags.QOS_CLASS))
    try:
        created = ctx.conn(spec).volume_create(name=naming.volume(uuid), parent="~" + chosen.global_id,
                                               template=template, iops=iops, tags=vtags)
    except SpExists:
        raise Conflict(f"volume {uuid} exists on pool {spec.name}; delete it first") from None
    except SpNotFound:
        raise NotFound(f"volume: the backup of {uuid} expired a moment ago") from None
    log.info("restored volume %s from its backup %s as %s", uuid, chosen.backup, created.global_id)
    return volumes.VolumeInfo(uuid=uuid, pool=spec.uuid, name=created.name, global_id=created.global_id,
                              path=created.path, size=chosen.size, template=template, iops=iops,
                              qos_class=vtags.get(tags.QOS_CLASS), tags=vtags)


class ExpiryTracker:
    """Remembers the backups one sync saw, so that the next can tell which expired."""

    KEEP = 1000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, DeletedVolume] | None = None
        self.expired: deque[DeletedVolume] = deque(maxlen=self.KEEP)
        """The last `KEEP` expiries this process saw, oldest first."""

    def sync(self, ctx: DriverContext) -> SyncReport:
        listed = deleted(ctx)
        now = {d.global_id: d for d in listed}
        with self._lock:
            before, self._seen = self._seen, now
            expired = [d for gid, d in (before or {}).items() if gid not in now]
            self.expired.extend(expired)
        for d in expired:
            log.info("delay-delete backup %s of volume %s expired: the volume can no longer be restored",
                     d.backup, d.uuid)
        return SyncReport(listed, expired)


def expired(ctx: DriverContext, *, tracker: ExpiryTracker) -> list[DeletedVolume]:
    """The deleted volumes whose backups this service process saw expire (newest last)."""
    return list(tracker.expired)
