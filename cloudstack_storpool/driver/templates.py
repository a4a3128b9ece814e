"""Template caching: one StorPool snapshot per (template, pool), filled once, cloned forever.

A root volume is one VolumeCreate with `parent` = the cached snapshot (no data copied). The
first use on a pool fills the cache:

1. VolumeCreate `naming.template_fill(t, pool)` (tags `uuid`=template, `cs=temporary`, `pool`,
   `started`=epoch seconds). StorPool names are unique cluster-wide, so this create *is* the lock:
   exactly one driver (thread, process, management server) wins; the others get `objectExists`
   and wait for the cache snapshot to appear.
2. A KVM host's agent copies the template from secondary storage into it (`qemu-img convert`,
   growing the volume to the image's virtual size). Templates made from a StorPool snapshot or
   volume skip the copy: the fill volume is a clone of the snapshot (`parent`) or of the volume
   (`baseOn`).
3. VolumeSnapshot named `naming.template_cache(t, pool)` (tags `uuid`, `cs=template`, `pool`).
4. VolumeDelete of the fill volume.

Any failure deletes the fill volume (by `~globalId`: after a takeover the *name* may already
belong to someone else's fill). A fill older than `storpool.template.fill.timeout` is presumed
dead (its driver crashed): a waiter deletes it and fills itself. If the cached snapshot is
deleted out of band, the next root volume simply fills it again.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cloudstack_storpool import names
from cloudstack_storpool.driver import naming, pools, tags
from cloudstack_storpool.driver.secondary import TemplateSource, agent_refusals
from cloudstack_storpool.errors import SpExists, SpNotFound, ValidationError
from cloudstack_storpool.poolconfig import PoolSpec
from cloudstack_storpool.spconn import Created

if TYPE_CHECKING:
    from cloudstack_storpool.driver.context import DriverContext

log = logging.getLogger(__name__)

FILL_POLL_START = 0.1
FILL_POLL_MAX = 2.0
OWNER_TAG = "fill"
"""A random value per fill attempt on the fill volume: after a lost VolumeCreate answer the
volume found by name is ours only if it carries our value (it may be another driver's)."""


@dataclass(frozen=True)
class CachedTemplate:
    template_uuid: str
    pool: str
    name: str
    global_id: str
    size: int | None
    filled: bool = False
    """True when this call made the cache (a fill), False when it was already there."""


def cache_name(template_uuid: str, pool: PoolSpec) -> str:
    return naming.template_cache(template_uuid, pool.uuid)


def fill_name(template_uuid: str, pool: PoolSpec) -> str:
    return naming.template_fill(template_uuid, pool.uuid)


def _cached_from(summary: Any, template_uuid: str, pool: PoolSpec, filled: bool = False) -> CachedTemplate:
    return CachedTemplate(template_uuid, pool.uuid, summary.name, summary.globalId, int(summary.size), filled)


def cached(ctx: DriverContext, pool: PoolSpec | str, template_uuid: str) -> CachedTemplate | None:
    """The cached snapshot of a template on a pool, if there is one (one Snapshot read)."""
    spec = pools.resolve(ctx, pool)
    snap = ctx.conn(spec).snapshot(cache_name(template_uuid, spec))
    return _cached_from(snap, template_uuid, spec) if snap is not None else None


def list_cached(ctx: DriverContext, pool: PoolSpec | str) -> list[CachedTemplate]:
    """Every cached template of a pool (found by tags `cs=template`, `pool`)."""
    spec = pools.resolve(ctx, pool)
    found = ctx.conn(spec).find_snapshots({tags.KIND: tags.TEMPLATE, **pools.pool_tags(spec)})
    return [_cached_from(s, s.tags.get(tags.UUID, ""), spec) for s in found]


def drop(ctx: DriverContext, pool: PoolSpec | str, template_uuid: str) -> bool:
    """Delete a template's cache on a pool; False when there was none. Volumes cloned from it
    keep their data (StorPool keeps a deleted snapshot until its last child is gone)."""
    spec = pools.resolve(ctx, pool)
    return ctx.conn(spec).snapshot_delete(cache_name(template_uuid, spec))


# ---------------------------------------------------------------------- filling


def _fill_timeout(ctx: DriverContext) -> int:
    value = ctx.settings.get("storpool.template.fill.timeout")
    return int(value) if isinstance(value, int) else 3600


def copy_timeout(ctx: DriverContext) -> float:
    """How long an agent copy may take (`storpool.agent.copy.timeout`): fills and imports alike."""
    value = ctx.settings.get("storpool.agent.copy.timeout")
    return float(value) if isinstance(value, int) else 7200.0


def _round_up(n: int, to: int = 512) -> int:
    return (n + to - 1) // to * to


def ensure_cached(
    ctx: DriverContext,
    pool: PoolSpec | str,
    template_uuid: str,
    *,
    source: TemplateSource | None = None,
    size: int | None = None,
    from_snapshot: str | None = None,
    from_volume: str | None = None,
    known_missing: bool = False,
) -> CachedTemplate:
    """The template's cached snapshot on `pool`, filling it first if needed.

    Exactly one of `source` (copy from secondary storage through an agent), `from_snapshot`
    or `from_volume` (StorPool names or `~globalId`: clone, no copy) says how to fill. `size` is
    the template's virtual size when known (the fill volume starts at it; the agent grows it to
    the image's virtual size anyway). `known_missing` skips the first lookup when the caller
    has just seen the cache missing.
    """
    spec = pools.resolve(ctx, pool)
    tuuid = naming.check_uuid(template_uuid, "template_uuid")
    given = [x for x in (source, from_snapshot, from_volume) if x is not None]
    if len(given) > 1:
        raise ValidationError("source", "give only one of source, from_snapshot, from_volume")
    if from_snapshot is not None:
        names.snapshot_name(from_snapshot, "from_snapshot")
    if from_volume is not None:
        names.volume_name(from_volume, "from_volume")
    if size is not None:
        names.size(_round_up(size), "size")
    conn = ctx.conn(spec)
    cache = cache_name(tuuid, spec)
    fill = fill_name(tuuid, spec)

    pause = FILL_POLL_START
    timeout: int | None = None
    first = True
    while True:
        if not (first and known_missing):
            snap = conn.snapshot(cache)
            if snap is not None:
                return _cached_from(snap, tuuid, spec)
        first = False
        if not given:
            raise ValidationError(
                "source", f"template {tuuid} is not cached on pool {spec.name} and no secondary-storage location was given",
            )
        owner = secrets.token_hex(8)
        try:
            created = _create_fill(ctx, spec, tuuid, fill, size, from_snapshot, from_volume, owner)
            if created.recovered and not _is_ours(ctx, spec, created, owner):
                # A lost answer, and the fill found by name is another driver's: wait for it.
                raise SpExists("objectExists", f"{fill} belongs to another fill", query="VolumeCreate")
        except SpExists:
            # Another driver is filling. Wait for its snapshot; take over a fill that is too old.
            if timeout is None:
                # The owner waits up to the copy timeout for its agent: a fill younger than that
                # may still be copying, so it is never presumed dead before then.
                timeout = max(_fill_timeout(ctx), int(copy_timeout(ctx)))
            busy = conn.volume(fill)
            if busy is not None:
                started = started_at(busy)
                age = ctx.clock() - started
                if started and age > timeout:
                    log.warning("template fill %s started %.0f s ago (limit %d s): taking it over", fill, age, timeout)
                    conn.volume_delete("~" + busy.globalId)
                    continue
                ctx.sleep(pause)
                pause = min(pause * 1.5, FILL_POLL_MAX)
            continue
        return _populate(ctx, spec, tuuid, cache, created, source)


def started_at(summary: Any) -> float:
    """When a temporary object (a fill) was made: its `started` tag, shared by the takeover
    here and by garbage collection, so both judge a fill's age the same way."""
    raw = (summary.tags or {}).get(tags.STARTED, "")
    try:
        return float(raw)
    except ValueError:
        # No stamp: use StorPool's own creation time, so a fill is never immortal.
        return float(getattr(summary, "creationTimestamp", 0) or 0)


def _is_ours(ctx: DriverContext, spec: PoolSpec, created: Created, owner: str) -> bool:
    found = ctx.conn(spec).volume(created.ref)
    return found is not None and (found.tags or {}).get(OWNER_TAG) == owner


def _create_fill(
    ctx: DriverContext, spec: PoolSpec, tuuid: str, fill: str, size: int | None,
    from_snapshot: str | None, from_volume: str | None, owner: str,
) -> Created:
    fill_tags = pools.identity_tags(tuuid, tags.TEMPORARY, spec, started=str(int(ctx.clock())))
    fill_tags[OWNER_TAG] = owner
    conn = ctx.conn(spec)
    if from_snapshot is not None:
        return conn.volume_create(name=fill, parent=from_snapshot, template=spec.template, tags=fill_tags)
    if from_volume is not None:
        return conn.volume_create(name=fill, base_on=from_volume, template=spec.template, tags=fill_tags)
    return conn.volume_create(name=fill, size=_round_up(size or 512), template=spec.template, tags=fill_tags)


def _populate(
    ctx: DriverContext, spec: PoolSpec, tuuid: str, cache: str, fill: Created, source: TemplateSource | None,
) -> CachedTemplate:
    """Copy (when from secondary), snapshot, delete the fill; the fill never outlives a failure."""
    conn = ctx.conn(spec)
    snap: Created | None = None
    try:
        if source is not None:
            timeout = copy_timeout(ctx)
            with agent_refusals("source"):
                ctx.agents.run_on_pool(spec, lambda agent: agent.copy_template(
                    store=source.store, path=source.path, volume=fill.path, source_format=source.agent_format,
                    timeout=timeout, idempotency_key=f"fill-{fill.global_id}", progress=ctx.progress,
                ))
        try:
            snap = conn.snapshot_create(
                fill.ref, name=cache, tags=pools.identity_tags(tuuid, tags.TEMPLATE, spec),
            )
        except SpExists:
            log.info("cache %s appeared while filling (a taken-over fill finished): using it", cache)
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


def cache_from_snapshot(ctx: DriverContext, pool: PoolSpec | str, template_uuid: str, snapshot: str) -> CachedTemplate:
    """A template made from a StorPool snapshot: cache it without copying any data."""
    return ensure_cached(ctx, pool, template_uuid, from_snapshot=snapshot)


def cache_from_volume(ctx: DriverContext, pool: PoolSpec | str, template_uuid: str, volume: str) -> CachedTemplate:
    """A template made from a StorPool volume: cache a clone of it without copying any data."""
    return ensure_cached(ctx, pool, template_uuid, from_volume=volume)
