"""Pool lifecycle: register, describe, list contents, remove.

Pools are configuration (the TOML pools file), not state. What a pool *holds* is found in
StorPool: every object the driver creates carries the tag `pool=<pool uuid>` (volumes, snapshots,
cached templates, fills, delay-delete backups), so several pools on one StorPool cluster, even on
one template, can tell their objects apart, and a pool can refuse removal while it holds any.

Objects the Java plugin made carry no `pool` tag. The Java plugin allows one pool per API
endpoint and template (so does the pools file), and creates every object in its pool's
template: an untagged object made by a CloudStack plugin (it has a `cs` tag) belongs to the pool
whose template it lives in (`owner`). `pool adopt` then gives it the tag.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import tomllib
import uuid as uuidlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cloudstack_storpool.driver import tags
from cloudstack_storpool.errors import Conflict, StorPoolError, ValidationError
from cloudstack_storpool.poolconfig import PoolsFile, PoolSpec, check_pool_id, load_pools, parse_pool_url, parse_pools
from cloudstack_storpool.spconn import StorPoolConn
from cloudstack_storpool.sprecords import SpSnapshot, SpVolume

if TYPE_CHECKING:
    from cloudstack_storpool.driver.context import DriverContext


def resolve(ctx: DriverContext, pool: PoolSpec | str) -> PoolSpec:
    """A pool given as PoolSpec, CloudStack uuid or name; unknown -> ValidationError('pool')."""
    return pool if isinstance(pool, PoolSpec) else ctx.pool(pool)


def pool_tags(pool: PoolSpec) -> dict[str, str]:
    """The tag that makes an object findable as belonging to `pool`."""
    return {tags.POOL: pool.key} if pool.uuid else {}


def identity_tags(uuid: str, kind: str, pool: PoolSpec, **extra: str | None) -> dict[str, str]:
    """`uuid`, `cs` and the pool's tag (when it has a uuid) of an object the driver creates."""
    return tags.identity(uuid, kind, pool=pool.key or None, **extra)


def owner(specs: Iterable[PoolSpec], obj: SpVolume) -> PoolSpec | None:
    """Which of `specs` (pools of one StorPool cluster) holds `obj`: the one its `pool` tag
    names, else, for an untagged object a CloudStack plugin made (the Java plugin's), the one
    whose template it lives in."""
    tagged = obj.tags.get(tags.POOL)
    if tagged:
        return next((p for p in specs if p.uuid and p.key == tagged), None)
    if not obj.tags.get(tags.KIND) or not obj.template:
        return None
    return next((p for p in specs if p.template == obj.template), None)


def owns(spec: PoolSpec, obj: SpVolume) -> bool:
    return owner((spec,), obj) is spec


def cluster_key(pool: PoolSpec) -> tuple[str, int]:
    """Pools with the same API endpoint are on one StorPool cluster: one namespace, one list."""
    return pool.host, pool.port


def by_cluster(ctx: DriverContext) -> list[list[PoolSpec]]:
    """The configured pools grouped by StorPool cluster, so that cluster-wide lists and lookups
    are made once per cluster rather than once per pool."""
    out: dict[tuple[str, int], list[PoolSpec]] = {}
    for p in ctx.pools.pools:
        out.setdefault(cluster_key(p), []).append(p)
    return list(out.values())


@dataclass(frozen=True)
class PoolInfo:
    uuid: str
    name: str
    zone: str
    endpoint: str
    template: str
    capacity: int | None = None
    """Estimated client-data capacity of the pool's template (StorPool's own estimate), bytes."""
    free: int | None = None
    used: int | None = None
    """Bytes of client data written to this pool's volumes (StorPool's `storedSize`, without replication)."""
    volumes: int = 0
    snapshots: int = 0
    cached_templates: int = 0


@dataclass(frozen=True)
class PoolObject:
    name: str
    global_id: str
    kind: str
    """StorPool's kind: "volume" or "snapshot"."""
    cs: str
    """The object's `cs` tag (volume, snapshot, template, temporary, delayDelete, ...)."""
    uuid: str | None


@dataclass(frozen=True)
class PoolContents:
    pool: str
    objects: list[PoolObject] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.objects


def _info(pool: PoolSpec) -> PoolInfo:
    return PoolInfo(uuid=pool.uuid, name=pool.name, zone=pool.zone, endpoint=pool.endpoint, template=pool.template)


# ---------------------------------------------------------------------- contents and describe


def contents(ctx: DriverContext, pool: PoolSpec | str) -> PoolContents:
    """Every live StorPool object of this pool, tagged or Java-made (two list calls)."""
    spec = resolve(ctx, pool)
    conn = ctx.conn(spec)
    objs: list[SpVolume] = [*conn.volumes(), *(s for s in conn.snapshots() if not s.deleted)]
    return PoolContents(spec.uuid, [PoolObject(o.name, o.global_id, o.kind, o.tags.get(tags.KIND, ""),
                                               o.tags.get(tags.UUID)) for o in objs if owns(spec, o)])


def list_pools(ctx: DriverContext) -> list[PoolInfo]:
    """The configured pools, from the pools file only (no StorPool call): cheap enough for a UI list."""
    return [_info(p) for p in ctx.pools.pools]


def describe(ctx: DriverContext, pool: PoolSpec | str) -> PoolInfo:
    """Capacity and free space of the pool's template, and what the pool holds."""
    spec = resolve(ctx, pool)
    conn = ctx.conn(spec)
    status = next((t for t in conn.templates_status() if t.name == spec.template), None)
    capacity = free = None
    if status is not None:
        stored = getattr(status, "stored", None)
        capacity, free = getattr(stored, "capacity", None), getattr(stored, "free", None)
    used = 0
    volumes = 0
    for v in conn.volumes_space():
        if owns(spec, v):
            used += v.stored
            volumes += 1
    snaps = [s for s in conn.snapshots() if not s.deleted and owns(spec, s)]
    cached = sum(1 for s in snaps if s.tags.get(tags.KIND) == tags.TEMPLATE)
    return PoolInfo(
        uuid=spec.uuid, name=spec.name, zone=spec.zone, endpoint=spec.endpoint, template=spec.template,
        capacity=capacity, free=free, used=used, volumes=volumes, snapshots=len(snaps) - cached,
        cached_templates=cached,
    )


# ---------------------------------------------------------------------- the pools file


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One writer at a time (management servers sharing the file on one host)."""
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _toml_str(value: str) -> str:
    out = value.replace("\\", "\\\\").replace('"', '\\"')
    if any(ord(c) < 0x20 for c in out):
        raise ValidationError("pool", "control characters are not allowed")
    return f'"{out}"'


def _entry(pool: PoolSpec) -> str:
    lines = [
        "[[pool]]",
        f"uuid = {_toml_str(pool.uuid)}",
        f"name = {_toml_str(pool.name)}",
    ]
    if pool.zone:
        lines.append(f"zone = {_toml_str(pool.zone)}")
    lines.append(f"url = {_toml_str(pool.url(redact=False))}")
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file in the same directory, fsync, rename: readers see the old file
    or the new one, never half of one. Mode 0600: the file holds API tokens."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _read(path: Path) -> tuple[str, PoolsFile]:
    if not path.exists():
        return "", PoolsFile(())
    return path.read_text(), load_pools(path)


def check_reachable(spec: PoolSpec, *, conn: StorPoolConn | None = None, field: str = "url") -> None:
    """The API answers with this token and the template exists (VolumeTemplateDescribe)."""
    conn = conn or StorPoolConn.from_pool(spec, retries=1, timeout=15.0)
    try:
        found = conn.template(spec.template)
    except StorPoolError as exc:
        if exc.name == "authError":
            raise ValidationError(f"{field}.SP_AUTH_TOKEN", "the StorPool API refused the token") from None
        if exc.code == "unreachable":
            raise ValidationError(f"{field}.SP_API_HTTP", f"the StorPool API at {spec.endpoint} does not answer") from None
        raise ValidationError(f"{field}.SP_API_HTTP", f"the StorPool API at {spec.endpoint} failed: {exc.name}") from None
    if found is None:
        raise ValidationError(f"{field}.SP_TEMPLATE", f"StorPool template {spec.template!r} does not exist")


def register(
    ctx: DriverContext | None,
    pools_file: str | Path,
    *,
    name: str,
    url: str,
    uuid: str | None = None,
    zone: str = "",
) -> PoolInfo:
    """Add a pool: validate the URL, check the API and template, refuse duplicates (uuid, name,
    endpoint+template), append to the pools file atomically. `ctx.pools` is refreshed."""
    if not isinstance(name, str) or not name.strip():
        raise ValidationError("name", "a pool needs a name")
    pool_uuid = str(uuidlib.uuid4()) if uuid is None else check_pool_id(uuid, "uuid")
    spec = parse_pool_url(url, "url")
    spec = PoolSpec(host=spec.host, port=spec.port, token=spec.token, template=spec.template,
                    uuid=pool_uuid, name=name.strip(), zone=zone)
    path = Path(pools_file)
    # Cheap duplicate check first: no need to contact an API for a pool we refuse anyway.
    _refuse_duplicates(_read(path)[1], spec)
    check_reachable(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        text, current = _read(path)
        _refuse_duplicates(current, spec)
        new_text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + _entry(spec)
        parse_pools(tomllib.loads(new_text), path.name)  # the file must stay loadable
        _write_atomic(path, new_text)
    if ctx is not None:
        ctx.pools = load_pools(path)
    return _info(spec)


def _refuse_duplicates(current: PoolsFile, spec: PoolSpec) -> None:
    for p in current.pools:
        if p.uuid == spec.uuid:
            raise ValidationError("uuid", f"pool {p.name!r} already has uuid {spec.uuid}")
        if p.name == spec.name:
            raise ValidationError("name", f"a pool named {spec.name!r} already exists")
        if p.endpoint == spec.endpoint and p.template == spec.template:
            raise ValidationError(
                "url", f"pool {p.name!r} already uses template {spec.template!r} on {spec.endpoint}",
            )


def templates_kept_as_snapshots(found: Sequence[SpSnapshot], volume: Callable[[str], SpVolume | None]) -> set[str]:
    """The global ids, among the Java plugin's `cs=template` snapshots `found`, of templates
    *kept as StorPool snapshots* rather than caches of a pool.

    The Java plugin tags both alike (`uuid=<template>`, `cs=template`). A template made from a
    volume (copyAsync volume -> template) is a VolumeSnapshot of that volume, recorded as the
    template's image-store copy (template_store_ref, detail `spStoragePoolId`); a pool's cache
    (template_spool_ref) is a volume made for the template (`cs=template`), filled or cloned
    from that copy, then frozen or snapshotted. So a kept template is the parent of a cache of
    the same template, or a snapshot of a user's volume (`onVolume` names a live `cs=volume`
    volume). `volume` reads a volume by name (asked only for a snapshot no cache descends from)."""
    parents = {s.parent for s in found if s.parent}
    kept: set[str] = set()
    for s in found:
        if s.ref in parents or (s.name and s.name in parents):
            kept.add(s.global_id)
            continue
        if not s.on_volume or s.on_volume in (s.ref, s.name, s.global_id):
            continue  # a frozen volume: the cache itself
        source = volume(s.on_volume)
        if source is not None and source.tags.get(tags.KIND) == tags.VOLUME:
            kept.add(s.global_id)
    return kept


@dataclass(frozen=True)
class RemovalPlan:
    """What removing a pool does to StorPool: what refuses it, and what it deletes first."""

    blocking: list[SpVolume] = field(default_factory=list)
    """Volumes, snapshots (volume and VM snapshots), templates kept as StorPool snapshots and
    temporary objects: while any is left the pool stays."""
    caches: list[SpVolume] = field(default_factory=list)
    """Cached templates (the project's and the Java plugin's template_spool_ref copies)."""
    check_volumes: list[SpVolume] = field(default_factory=list)
    """The Java host listener's `cs=check-volume-is-on-host` volumes."""


def removal_plan(ctx: DriverContext, spec: PoolSpec) -> RemovalPlan:
    """Sort what the pool holds as the Java plugin's deleteDataStore does (two list calls).

    deleteDataStore refuses while CloudStack snapshots or templates kept as StorPool snapshots
    belong to the pool (CloudStack itself refuses while volumes do), and otherwise deletes the
    pool's template caches and the hosts' check volumes. Delay-delete backups neither refuse nor
    go: StorPool deletes them when their time is up."""
    conn = ctx.conn(spec)
    everything = conn.volumes()
    by_name = {n: v for v in everything for n in (v.ref, v.name) if n}
    vols = [v for v in everything if owns(spec, v)]
    snaps = [s for s in conn.snapshots() if not s.deleted and owns(spec, s)]
    java_templates = [s for s in snaps if s.tags.get(tags.KIND) == tags.TEMPLATE and not s.tags.get(tags.POOL)]
    kept = templates_kept_as_snapshots(java_templates, by_name.get)
    plan = RemovalPlan()
    for v in vols:
        (plan.check_volumes if v.tags.get(tags.KIND) == tags.CHECK_VOLUME else plan.blocking).append(v)
    for s in snaps:
        kind = s.tags.get(tags.KIND)
        if kind == tags.DELAY_DELETE:
            continue
        (plan.caches if kind == tags.TEMPLATE and s.global_id not in kept else plan.blocking).append(s)
    return plan


def remove(ctx: DriverContext, pools_file: str | Path, pool: str) -> PoolInfo:
    """Remove a pool from the file. Refused (Conflict, listing them) while it holds volumes,
    snapshots, templates kept as StorPool snapshots or temporary objects; otherwise its cached
    templates and check volumes are deleted first (`removal_plan`), then the file entry."""
    spec = resolve(ctx, pool)
    plan = removal_plan(ctx, spec)
    if plan.blocking:
        listed = ", ".join(f"{o.name or o.ref} ({o.tags.get(tags.KIND) or o.kind})" for o in plan.blocking[:20])
        more = f" and {len(plan.blocking) - 20} more" if len(plan.blocking) > 20 else ""
        raise Conflict(f"pool {spec.name!r} still holds {len(plan.blocking)} StorPool objects: {listed}{more}")
    path = Path(pools_file)
    with _locked(path):
        _text, current = _read(path)
        if not any(p.uuid == spec.uuid for p in current.pools):
            raise ValidationError("pool", f"pool {spec.name!r} is not in {path}")
    conn = ctx.conn(spec)
    for cache in plan.caches:
        conn.snapshot_delete(cache.ref)
    for check in plan.check_volumes:
        conn.volume_delete(check.ref, on_attached="detachForce")
    with _locked(path):
        _text, current = _read(path)
        rest = [p for p in current.pools if p.uuid != spec.uuid]
        if len(rest) == len(current.pools):
            raise ValidationError("pool", f"pool {spec.name!r} is not in {path}")
        _write_atomic(path, "\n".join(_entry(p) for p in rest))
    ctx.pools = load_pools(path)
    return _info(spec)
