"""Template caching: one StorPool snapshot per (template, pool), filled once, cloned forever.

A root volume is one VolumeCreate with `parent` = the cached snapshot (no data copied). The
first use on a pool fills the cache:

1. VolumeCreate `naming.template_fill(t, pool)` (tags `uuid`=template, `cs=temporary`, `pool`,
   `started` and `alive`=epoch seconds). StorPool names are unique cluster-wide, so this create
   *is* the lock: exactly one driver (thread, process, management server) wins; the others get
   `objectExists` and wait for the cache snapshot to appear. The winner looks for the cache
   once more (another filler may have finished and released the lock since its last look)
   and, finding it, deletes its fill unused.
2. A KVM host's agent copies the template from secondary storage into it (`qemu-img convert`,
   growing the volume to the image's virtual size). Templates made from a StorPool snapshot or
   volume skip the copy: the fill volume is a clone of the snapshot (`parent`) or of the volume
   (`baseOn`).
3. VolumeSnapshot named `naming.template_cache(t, pool)` (tags `uuid`, `cs=template`, `pool`).
4. VolumeDelete of the fill volume.

From the create to the delete the owner refreshes the fill's `alive` tag (`liveness.py`) every
quarter of `storpool.template.fill.timeout`. A waiter that has watched that stamp stay
unchanged for longer than the timeout presumes the owner dead (a crashed or killed driver),
deletes the fill and fills itself; a live owner is never taken over, however long its copy
takes (its agent call is bounded by `storpool.agent.copy.timeout`). Any failure deletes the
fill volume (by `~globalId`: after a takeover the *name* may already belong to someone else's
fill). If the cached snapshot is deleted out of band, the next root volume simply fills it again.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cloudstack_storpool import names
from cloudstack_storpool.driver import liveness, locate, naming, pools, spclusters, tags
from cloudstack_storpool.driver.agenttimeouts import copy_timeout
from cloudstack_storpool.driver.secondary import TemplateSource, agent_refusals
from cloudstack_storpool.driver.spclusters import Target
from cloudstack_storpool.errors import SpExists, SpNotFound, ValidationError
from cloudstack_storpool.poolconfig import PoolSpec
from cloudstack_storpool.spconn import Created, StorPoolConn
from cloudstack_storpool.uuids import Uuid, check_uuid

if TYPE_CHECKING:
    from cloudstack_storpool.driver.context import DriverContext
    from cloudstack_storpool.spconn import StorPoolConn
    from cloudstack_storpool.sprecords import SpSnapshot

log = logging.getLogger(__name__)

FILL_POLL_START = 0.1
FILL_POLL_MAX = 2.0
OWNER_TAG = "fill"
"""A random value per fill attempt on the fill volume: after a lost VolumeCreate answer the
volume found by name is ours only if it carries our value (it may be another driver's)."""


@dataclass(frozen=True)
class CachedTemplate:
    template_uuid: Uuid
    pool: str
    name: str
    global_id: str
    size: int | None
    filled: bool = False
    """True when this call made the cache (a fill), False when it was already there."""


def cache_name(template_uuid: Uuid, pool: PoolSpec, where: Target | None = None) -> str:
    """The pool's cache in its own StorPool cluster, or in the cluster `where` names."""
    return naming.template_cache(template_uuid, pool.key, where.sp_cluster if where else None)


def fill_name(template_uuid: Uuid, pool: PoolSpec, where: Target | None = None) -> str:
    return naming.template_fill(template_uuid, pool.key, where.sp_cluster if where else None)


def _cached_from(summary: Any, template_uuid: Uuid, pool: PoolSpec, filled: bool = False) -> CachedTemplate:
    return CachedTemplate(template_uuid, pool.uuid, summary.name, summary.global_id, int(summary.size), filled)


def _find(conn: StorPoolConn, spec: PoolSpec, template_uuid: Uuid, where: Target | None = None) -> SpSnapshot | None:
    """The project's cache by its name (one Snapshot read); else, on a pool the Java plugin
    initialised, the cache the Java plugin made (it is used as is: no second copy). The Java
    plugin caches in the pool's own cluster only."""
    found = conn.snapshot(cache_name(template_uuid, spec, where))
    if found is None and (where is None or where.home):
        found = locate.java_template_cache(conn, spec, template_uuid)
    return found


def cached(ctx: DriverContext, pool: PoolSpec | str, template_uuid: Uuid) -> CachedTemplate | None:
    """The cached snapshot of a template on a pool, if there is one."""
    spec = pools.resolve(ctx, pool)
    snap = _find(ctx.conn(spec), spec, template_uuid)
    return _cached_from(snap, template_uuid, spec) if snap is not None else None


def list_cached(ctx: DriverContext, pool: PoolSpec | str) -> list[CachedTemplate]:
    """Every cached template of a pool (tag `cs=template`; the pool's tag, or Java-made)."""
    spec = pools.resolve(ctx, pool)
    found = [s for s in ctx.conn(spec).find_snapshots({tags.KIND: tags.TEMPLATE}) if pools.owns(spec, s)]
    return [_cached_from(s, s.tags.get(tags.UUID, ""), spec) for s in found]


def drop(ctx: DriverContext, pool: PoolSpec | str, template_uuid: Uuid, *, path: str | None = None) -> bool:
    """Delete a template's cache on a pool (the project's or the Java plugin's); False when
    there was none. Volumes cloned from it keep their data (StorPool keeps a deleted snapshot
    until its last child is gone).

    `path` is the cache's path as CloudStack keeps it for the pool (template_spool_ref): exactly
    that snapshot goes, after checking it is a cache of this template. Without it the cache is
    the project's by name, else the Java plugin's by its tags, never a template the Java plugin
    keeps as a StorPool snapshot (`pools.templates_kept_as_snapshots`): that is the template itself."""
    spec = pools.resolve(ctx, pool)
    tuuid = check_uuid(template_uuid, "template_uuid")
    conn = ctx.conn(spec)
    exact = _cache_at(conn, spec, tuuid, path) if path else None
    dropped = False
    for where in spclusters.targets(ctx, spec):  # the pool's caches in other StorPool clusters
        dropped = where.conn.snapshot_delete(cache_name(tuuid, spec, where)) or dropped
    if path:
        return (exact is not None and conn.snapshot_delete(exact)) or dropped
    if conn.snapshot_delete(cache_name(tuuid, spec)):
        return True
    java = locate.java_template_cache(conn, spec, tuuid)
    return (java is not None and conn.snapshot_delete(java.ref)) or dropped


def _cache_at(conn: StorPoolConn, spec: PoolSpec, template_uuid: str, path: str) -> str | None:
    """The API name of the cache at `path`; None when it is gone already. A snapshot that is not
    a cache of this template on this pool is refused (ValidationError naming `path`)."""
    name = names.path_to_name(path, "path")
    snap = conn.snapshot(name)
    if snap is None or snap.deleted:
        return None
    if (snap.tags.get(tags.UUID, "").lower() != template_uuid or snap.tags.get(tags.KIND) != tags.TEMPLATE
            or not pools.owns(spec, snap)):
        raise ValidationError("path", f"{path} is not a cached template {template_uuid} of pool {spec.name}")
    return name


# ---------------------------------------------------------------------- filling


def fill_timeout(ctx: DriverContext) -> int:
    """Seconds a fill may go without refreshing its `alive` stamp before it is taken over."""
    value = ctx.settings.get("storpool.template.fill.timeout")
    return int(value) if isinstance(value, int) else 60


def _round_up(n: int, to: int = 512) -> int:
    return (n + to - 1) // to * to


def ensure_cached(
    ctx: DriverContext,
    pool: PoolSpec | str,
    template_uuid: Uuid,
    *,
    source: TemplateSource | None = None,
    size: int | None = None,
    from_snapshot: str | None = None,
    from_volume: str | None = None,
    known_missing: bool = False,
    cluster_id: str | None = None,
) -> CachedTemplate:
    """The template's cached snapshot on `pool`, filling it first if needed.

    Exactly one of `source` (copy from secondary storage through an agent), `from_snapshot`
    or `from_volume` (StorPool names or `~globalId`: clone, no copy) says how to fill. `size` is
    the template's virtual size when known (the fill volume starts at it; the agent grows it to
    the image's virtual size anyway). `known_missing` skips the first lookup when the caller
    has just seen the cache missing. `cluster_id` (a CloudStack cluster) picks the StorPool
    cluster the cache is for (`spclusters.target`); its copy runs on a host of that cluster.
    """
    spec = pools.resolve(ctx, pool)
    tuuid = check_uuid(template_uuid, "template_uuid")
    how = _FillFrom.checked(source, size, from_snapshot, from_volume)
    where = spclusters.target(ctx, spec, cluster_id)
    conn = where.conn
    cache = cache_name(tuuid, spec, where)
    wait = _Wait(ctx, conn, fill_name(tuuid, spec, where))
    look = not known_missing
    while True:
        if look:
            found = _find(conn, spec, tuuid, where)
            if found is not None:
                return _cached_from(found, tuuid, spec)
        look = True
        if how.nothing:
            raise ValidationError(
                "source", f"template {tuuid} is not cached on pool {spec.name} and no secondary-storage location was given",
            )
        fill = _lock(ctx, spec, tuuid, how, where)
        if fill is None:
            wait.for_other_fill()
            continue
        done = _filled_meanwhile(conn, cache, fill)
        if done is not None:
            return _cached_from(done, tuuid, spec)
        return _populate(ctx, spec, tuuid, cache, fill, source, where)


def _filled_meanwhile(conn: StorPoolConn, cache: str, fill: Created) -> Any | None:
    """The cache, when another filler finished (and released the lock) between our last look
    and our lock: our fill is deleted unused. Without this look a caller that had just seen the
    cache missing would copy the template a second time (one Snapshot read per fill)."""
    found = conn.snapshot(cache)
    if found is not None:
        log.info("cache %s was filled while we took the lock: not copying again", cache)
        conn.volume_delete(fill.ref)
    return found


@dataclass(frozen=True)
class _FillFrom:
    """How a cache is filled: copied from secondary storage (`source`), or cloned from a
    StorPool snapshot or volume; checked before anything is created."""

    source: TemplateSource | None
    size: int | None
    snapshot: str | None
    volume: str | None

    @classmethod
    def checked(cls, source: TemplateSource | None, size: int | None, snapshot: str | None,
                volume: str | None) -> _FillFrom:
        if sum(x is not None for x in (source, snapshot, volume)) > 1:
            raise ValidationError("source", "give only one of source, from_snapshot, from_volume")
        if snapshot is not None:
            names.snapshot_name(snapshot, "from_snapshot")
        if volume is not None:
            names.volume_name(volume, "from_volume")
        if size is not None:
            names.size(_round_up(size), "size")
        return cls(source, size, snapshot, volume)

    @property
    def nothing(self) -> bool:
        return self.source is None and self.snapshot is None and self.volume is None


def _lock(ctx: DriverContext, spec: PoolSpec, tuuid: str, how: _FillFrom, where: Target) -> Created | None:
    """Create the fill volume, which is the fill lock; None when another driver holds it."""
    owner = secrets.token_hex(8)
    try:
        created = _create_fill(ctx, spec, tuuid, how, owner, where)
    except SpExists:
        return None
    if created.recovered and not _is_ours(where.conn, created, owner):
        return None  # a lost answer, and the fill found by name is another driver's
    return created


class _Wait:
    """Waiting for another driver's fill: poll with a growing pause, and take over a fill whose
    liveness stamp has stopped changing."""

    def __init__(self, ctx: DriverContext, conn: StorPoolConn, fill: str) -> None:
        self.ctx, self.conn, self.fill = ctx, conn, fill
        self.pause = FILL_POLL_START
        self.watch: liveness.Watch | None = None

    def for_other_fill(self) -> None:
        """Return when it is worth looking for the cache (or trying the lock) again."""
        if self.watch is None:
            self.watch = liveness.Watch(fill_timeout(self.ctx), self.ctx.clock)
        busy = self.conn.volume(self.fill)
        if busy is None:
            return  # finished or failed meanwhile
        if self.watch.dead(busy):
            log.warning("template fill %s has shown no sign of life for %.0f s (limit %.0f s): taking it over",
                        self.fill, self.watch.unchanged_for, self.watch.limit)
            self.conn.volume_delete(busy.ref)
            return
        self.ctx.sleep(self.pause)
        self.pause = min(self.pause * 1.5, FILL_POLL_MAX)


def _is_ours(conn: StorPoolConn, created: Created, owner: str) -> bool:
    found = conn.volume(created.ref)
    return found is not None and found.tags.get(OWNER_TAG) == owner


def _create_fill(ctx: DriverContext, spec: PoolSpec, tuuid: str, how: _FillFrom, owner: str, where: Target) -> Created:
    stamp = liveness.first_stamp(ctx.clock)
    fill_tags = pools.identity_tags(tuuid, tags.TEMPORARY, spec, started=stamp, alive=stamp)
    fill_tags[OWNER_TAG] = owner
    args: dict[str, Any] = where.create_args({"name": fill_name(tuuid, spec, where), "template": spec.template,
                                                    "tags": fill_tags})
    if how.snapshot is not None:
        return where.conn.volume_create(parent=how.snapshot, **args)
    if how.volume is not None:
        return where.conn.volume_create(base_on=how.volume, **args)
    return where.conn.volume_create(size=_round_up(how.size or 512), **args)


def _populate(
    ctx: DriverContext, spec: PoolSpec, tuuid: str, cache: str, fill: Created, source: TemplateSource | None,
    where: Target,
) -> CachedTemplate:
    """Copy (when from secondary) and snapshot while stamping the fill alive, then delete the
    fill; the fill never outlives a failure."""
    conn = where.conn
    try:
        with liveness.Heartbeat(conn, fill.ref, fill_timeout(ctx), ctx.clock, ctx.wait):
            snap = _copy_and_snapshot(ctx, spec, tuuid, cache, fill, source, where)
    finally:
        try:
            conn.volume_delete(fill.ref)
        except Exception as exc:  # the cache is fine; the fill is tagged cs=temporary for GC
            log.warning("could not delete template fill %s: %s (left to garbage collection)", fill.ref, exc)
    if snap is None:
        found = conn.snapshot(cache)
        if found is None:
            raise SpNotFound("objectDoesNotExist", f"cached template {cache} vanished after a concurrent fill",
                             query="Snapshot")
        return _cached_from(found, tuuid, spec)
    log.info("cached template %s on pool %s as %s", tuuid, spec.name, snap.name)
    return CachedTemplate(tuuid, spec.uuid, cache, snap.global_id, None, True)


def _copy_and_snapshot(
    ctx: DriverContext, spec: PoolSpec, tuuid: str, cache: str, fill: Created, source: TemplateSource | None,
    where: Target,
) -> Created | None:
    """The agent's copy into the fill (from secondary only), then the cache snapshot; None when
    the cache appeared meanwhile (a taken-over fill finished after all)."""
    if source is not None:
        timeout = copy_timeout(ctx)
        with agent_refusals("source"):
            ctx.agents.run_on_pool(spec, lambda agent: agent.copy_template(
                store=source.store, path=source.path, volume=fill.path, source_format=source.agent_format,
                timeout=timeout, idempotency_key=f"fill-{fill.global_id}", progress=ctx.progress,
            ), clusters=spclusters.copy_clusters(ctx, spec, where))
    try:
        return where.conn.snapshot_create(fill.ref, name=cache, tags=pools.identity_tags(tuuid, tags.TEMPLATE, spec))
    except SpExists:
        log.info("cache %s appeared while filling (a taken-over fill finished): using it", cache)
        return None


def cache_from_snapshot(ctx: DriverContext, pool: PoolSpec | str, template_uuid: Uuid, snapshot: str) -> CachedTemplate:
    """A template made from a StorPool snapshot: cache it without copying any data."""
    return ensure_cached(ctx, pool, template_uuid, from_snapshot=snapshot)


def cache_from_volume(ctx: DriverContext, pool: PoolSpec | str, template_uuid: Uuid, volume: str) -> CachedTemplate:
    """A template made from a StorPool volume: cache a clone of it without copying any data."""
    return ensure_cached(ctx, pool, template_uuid, from_volume=volume)
