"""Pool capacity and volume space statistics, for CloudStack's allocators and for operators.

The Java plugin's StorPoolStatsCollector asks StorPool for whole-cluster answers on a timer
(`storpool.storage.stats.interval`, `storpool.volumes.stats.interval`) instead of asking about
each volume: one VolumeTemplatesStatus per cluster gives every template's capacity and free space,
one VolumesSpace per cluster gives every volume's size, stored bytes and IOPS limit. The same is
done here, so a collection costs one call per cluster however many volumes and pools there are
(the benchmark `bench_stats` counts them for 10k volumes).

A pool's capacity is its template's (StorPool estimates client-data capacity per template from
its placement groups and replication): pools sharing a template on one cluster share it, as in
the Java plugin. What a pool *holds* (provisioned and stored bytes, volume count) comes from the
volume collection, attributed by the `pool` tag, or, for volumes the Java plugin made (no `pool`
tag), by their template when exactly one pool of that cluster uses it.

`StatsCache` keeps the last collection of each kind: the service serves from it between runs of
its collectors (service/periodic.py), so CloudStack's frequent capacity calls never reach
StorPool. Without a cache (operator commands) every call collects afresh.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cloudstack_storpool import names
from cloudstack_storpool.driver import naming, pools, tags
from cloudstack_storpool.poolconfig import PoolSpec
from cloudstack_storpool.uuids import Uuid

if TYPE_CHECKING:
    from cloudstack_storpool.driver.context import DriverContext
    from cloudstack_storpool.sprecords import SpVolume

@dataclass(frozen=True)
class PoolCapacity:
    """One pool's template as StorPool estimates it (bytes of client data)."""

    pool: str
    total: int | None
    free: int | None


@dataclass(frozen=True)
class VolumeStats:
    uuid: str | None
    """The CloudStack uuid (`uuid` tag); None for a volume CloudStack did not make."""
    pool: str | None
    """The CloudStack uuid of the pool it belongs to; None when no configured pool claims it."""
    name: str
    global_id: str
    path: str
    allocated: int
    """The volume's size: what it may grow to (thin)."""
    stored: int
    """Bytes of client data written to this volume itself, without replication (`storedSize`)."""
    space_used: int
    """Client data readable through it, its parents' included (`spaceUsed`)."""
    iops: int | None
    """The current StorPool IOPS limit; None: no limit."""
    template: str | None


@dataclass(frozen=True)
class PoolStats:
    uuid: str
    name: str
    template: str
    total: int | None
    """Capacity of the pool's template, bytes of client data (None: StorPool has no such template)."""
    used: int | None
    """total - free: what CloudStack's allocator counts as used."""
    free: int | None
    provisioned: int
    """Sum of the sizes of the pool's volumes (thin: may exceed total)."""
    stored: int
    """Sum of the bytes written to the pool's volumes, without replication."""
    volumes: int
    collected_at: float
    """When the older of the two collections it combines was made (UNIX time)."""


# ---------------------------------------------------------------------- collections


def collect_capacity(ctx: DriverContext) -> list[PoolCapacity]:
    """Every configured pool's capacity: one VolumeTemplatesStatus per cluster."""
    out: list[PoolCapacity] = []
    for group in pools.by_cluster(ctx):
        rows = {t.name: t for t in ctx.conn(group[0]).templates_status()}
        for spec in group:
            stored = getattr(rows.get(spec.template), "stored", None)
            out.append(PoolCapacity(spec.uuid, getattr(stored, "capacity", None), getattr(stored, "free", None)))
    return out


def owner(v: SpVolume, group: list[PoolSpec]) -> str | None:
    """The uuid of the pool a StorPool object belongs to (`pools.owner`: its `pool` tag, else the
    pool whose template holds an untagged plugin-made object)."""
    found = pools.owner(group, v)
    return found.uuid if found is not None else None


def volume_stats_of(v: SpVolume, pool: str | None) -> VolumeStats:
    """VolumeStats of one VolumesSpace row."""
    return VolumeStats(
        uuid=v.tags.get(tags.UUID), pool=pool, name=v.name, global_id=v.global_id, path=v.path,
        allocated=v.size, stored=v.stored, space_used=v.space_used, iops=v.iops or None,
        template=v.template or None,
    )


def collect_volumes(ctx: DriverContext) -> list[VolumeStats]:
    """Every volume of every cluster the pools are on: one VolumesSpace per cluster. Objects being
    deleted (`*name`) and anonymous snapshots' views (`vol@n`) are skipped, as the Java plugin does."""
    out: list[VolumeStats] = []
    for group in pools.by_cluster(ctx):
        for v in ctx.conn(group[0]).volumes_space():
            if v.name.startswith("*") or "@" in v.name:
                continue
            out.append(volume_stats_of(v, owner(v, group)))
    return out


def combine(ctx: DriverContext, capacity: Iterable[PoolCapacity], volumes: Iterable[VolumeStats],
            collected_at: float) -> list[PoolStats]:
    """Pool statistics from one capacity and one volume collection (no StorPool call)."""
    held: dict[str, list[VolumeStats]] = {}
    for v in volumes:
        if v.pool is not None:
            held.setdefault(v.pool, []).append(v)
    by_pool = {c.pool: c for c in capacity}
    out = []
    for spec in ctx.pools.pools:
        cap = by_pool.get(spec.uuid, PoolCapacity(spec.uuid, None, None))
        mine = held.get(spec.uuid, [])
        used = cap.total - cap.free if cap.total is not None and cap.free is not None else None
        out.append(PoolStats(
            uuid=spec.uuid, name=spec.name, template=spec.template, total=cap.total, used=used, free=cap.free,
            provisioned=sum(v.allocated for v in mine), stored=sum(v.stored for v in mine), volumes=len(mine),
            collected_at=collected_at,
        ))
    return out


# ---------------------------------------------------------------------- the cache


class StatsCache:
    """The last capacity and volume collections, each refreshed on its own interval."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, tuple[float, list[Any]]] = {}
        self.collections: Counter[str] = Counter()

    def refresh(self, ctx: DriverContext, kind: str) -> list[PoolStats]:
        """Collect `kind` ("capacity" or "volumes") now; returns the pool statistics it updates
        (what the service's periodic task reports to the metrics)."""
        rows = _COLLECT[kind](ctx)
        with self._lock:
            self._held[kind] = (ctx.clock(), rows)
            self.collections[kind] += 1
            cap_at, capacity = self._held.get("capacity", (0.0, []))
            vol_at, volumes = self._held.get("volumes", (0.0, []))
        # Only what is held: refreshing one kind never collects the other.
        return combine(ctx, capacity, volumes, min(cap_at, vol_at))

    def _get(self, ctx: DriverContext, kind: str) -> tuple[float, list[Any]]:
        """The cached collection of `kind`; collected now if there is none yet, or if what is
        held is stale: its collector is off (interval 0) or has not refreshed it for two intervals."""
        with self._lock:
            held = self._held.get(kind)
        if held is None or _stale(ctx, kind, held[0]):
            rows = _COLLECT[kind](ctx)
            with self._lock:
                held = self._held[kind] = (ctx.clock(), rows)
        return held

    def capacity(self, ctx: DriverContext) -> tuple[float, list[PoolCapacity]]:
        return self._get(ctx, "capacity")

    def volumes(self, ctx: DriverContext) -> tuple[float, list[VolumeStats]]:
        return self._get(ctx, "volumes")


_COLLECT: dict[str, Callable[[DriverContext], list[Any]]] = {"capacity": collect_capacity, "volumes": collect_volumes}
INTERVALS = {"capacity": "storpool.storage.stats.interval", "volumes": "storpool.volumes.stats.interval"}
"""The setting that paces each collection (the service's periodic tasks read the same)."""


def _stale(ctx: DriverContext, kind: str, at: float) -> bool:
    every = ctx.settings.get(INTERVALS[kind])
    if not isinstance(every, int) or every <= 0:
        return True
    return ctx.clock() - at > 2 * every


# ---------------------------------------------------------------------- what is published


def pool_stats(ctx: DriverContext, pool: str | None = None, *, cache: StatsCache | None = None) -> list[PoolStats]:
    """Total, used, free, provisioned and stored bytes of every pool (or of `pool`): from the
    service's last collections, or collected now (one call per cluster per collection)."""
    spec = pools.resolve(ctx, pool) if pool else None
    if cache is None:
        capacity, volumes, at = collect_capacity(ctx), collect_volumes(ctx), ctx.clock()
    else:
        cap_at, capacity = cache.capacity(ctx)
        vol_at, volumes = cache.volumes(ctx)
        at = min(cap_at, vol_at)
    rows = combine(ctx, capacity, volumes, at)
    return [r for r in rows if spec is None or r.uuid == spec.uuid]


def volume_stats(ctx: DriverContext, pool: str | None = None, volume_uuid: Uuid | None = None, *,
                 path: str | None = None, cache: StatsCache | None = None) -> list[VolumeStats]:
    """Allocated and stored bytes and the IOPS limit of the volumes of `pool` (default: every
    pool), or of one CloudStack volume: by uuid, or by the path CloudStack stores
    (`/dev/storpool-byid/<globalId>`), which is what CloudStack's volume-stats call hands over."""
    spec = pools.resolve(ctx, pool) if pool else None
    uuid = naming.check_uuid(volume_uuid, "volume_uuid") if volume_uuid else None
    wanted = names.path_to_name(path, "path") if path else None
    rows = collect_volumes(ctx) if cache is None else cache.volumes(ctx)[1]
    if spec is not None:
        rows = [r for r in rows if r.pool == spec.uuid]
    elif uuid is None and wanted is None:
        rows = [r for r in rows if r.pool is not None]
    if uuid is not None:
        rows = [r for r in rows if r.uuid == uuid]
    if wanted is not None:
        rows = [r for r in rows if wanted in ("~" + r.global_id, r.name)]
    return rows

