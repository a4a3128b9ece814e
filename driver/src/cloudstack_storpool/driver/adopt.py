"""Taking over a pool the Java plugin built: adopt its objects, report the abandoned ones.

The project finds the Java plugin's objects without help (`locate`, `pools.owner`), at the price
of a listing now and then. `adopt` makes them first-class, so they cost what the project's own
cost:

* every object of the pool gets the tag `pool=<pool uuid>` (describe, contents, remove and GC
  then see it through the tag alone);
* snapshots get the project's names: a volume snapshot `naming.snapshot(uuid)`, a VM-snapshot
  member `naming.vm_snapshot_member(vm snapshot, volume)`, a cached template
  `templates.cache_name(template, pool)`. A rename keeps the global id, so the paths CloudStack
  stores stay valid.

Like the Java plugin's StorPoolAbandonObjectsCollector, it also reports every object of the
pool that it cannot tie to a live CloudStack object (volume, snapshot, VM snapshot, template):
those are never touched unless `delete_orphans` is given. A dry run changes nothing and lists
what would be done. Five CloudStack listings and two StorPool listings per run, whatever the
number of objects.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cloudstack_storpool import names
from cloudstack_storpool.driver import naming, pools, tags, templates
from cloudstack_storpool.driver.snapshots import drop_snapshot
from cloudstack_storpool.errors import ProjectError, ValidationError

if TYPE_CHECKING:
    from cloudstack_storpool.driver.context import DriverContext
    from cloudstack_storpool.poolconfig import PoolSpec
    from cloudstack_storpool.spconn import StorPoolConn
    from cloudstack_storpool.sprecords import SpVolume

log = logging.getLogger(__name__)

TAG = "tag"
ORPHAN = "orphan"
KINDS = ("volume", "snapshot")
# The project's own bookkeeping: GC's business, not CloudStack objects.
_PROJECT_KINDS = (tags.TEMPORARY, tags.DELAY_DELETE)


@dataclass(frozen=True)
class AdoptAction:
    action: str
    """`tag` (give the project's tag and name) or `orphan` (no live CloudStack object)."""
    kind: str
    """StorPool's kind: volume or snapshot."""
    ref: str
    """`~globalId`."""
    name: str
    cs: str
    uuid: str | None
    rename: str | None = None
    reason: str = ""


@dataclass
class AdoptReport:
    pool: str
    dry_run: bool
    delete_orphans: bool
    actions: list[AdoptAction] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    """`~globalId` of every object changed (tagged, renamed, or deleted)."""
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def orphans(self) -> list[AdoptAction]:
        return [a for a in self.actions if a.action == ORPHAN]


@dataclass
class _Live:
    """What CloudStack has, listed once per run."""

    volumes: dict[str, str]
    """volume uuid and global id of its path -> volume uuid."""
    snapshots: set[str]
    vm_snapshots: set[str]
    templates: set[str]

    @classmethod
    def read(cls, ctx: DriverContext) -> _Live:
        vols: dict[str, str] = {}
        for v in ctx.cloudstack.volumes():
            vols[v.id] = v.id
            if v.path and v.path.startswith(names.BYID_PREFIX):
                vols[v.path.removeprefix(names.BYID_PREFIX)] = v.id
        return cls(vols, {s.id for s in ctx.cloudstack.snapshots()}, {s.id for s in ctx.cloudstack.vm_snapshots()},
                   {t.id for t in ctx.cloudstack.templates("all")})


def _project_name(obj: SpVolume, spec: PoolSpec, live: _Live) -> str | None:
    """The name the project gives such a snapshot; None for volumes (found by path) and when it
    cannot be derived."""
    uuid, kind = obj.tags.get(tags.UUID, ""), obj.tags.get(tags.KIND)
    if obj.kind != "snapshot" or not uuid:
        return None
    try:
        if kind == tags.SNAPSHOT:
            return naming.snapshot(uuid)
        if kind == tags.TEMPLATE:
            return templates.cache_name(uuid, spec)
        if kind == tags.GROUP:
            volume = live.volumes.get(getattr(obj, "on_volume", "").removeprefix("~"))
            return naming.vm_snapshot_member(uuid, volume) if volume else None
    except ValidationError:
        return None
    return None


def _orphan_reason(obj: SpVolume, live: _Live) -> str | None:
    """Why `obj` cannot be tied to a live CloudStack object; None when it can (or is GC's)."""
    uuid, kind = obj.tags.get(tags.UUID, ""), obj.tags.get(tags.KIND, "")
    if kind in _PROJECT_KINDS:
        return None
    if kind == tags.VOLUME:
        return None if obj.global_id in live.volumes or uuid in live.volumes else f"CloudStack has no volume {uuid}"
    if kind == tags.SNAPSHOT:
        return None if uuid in live.snapshots else f"CloudStack has no snapshot {uuid}"
    if kind == tags.GROUP:
        return None if uuid in live.vm_snapshots else f"CloudStack has no VM snapshot {uuid}"
    if kind == tags.TEMPLATE:
        return None if uuid in live.templates else f"CloudStack has no template {uuid}"
    return f"unknown kind cs={kind!r}"


def _action(action: str, obj: SpVolume, rename: str | None, reason: str) -> AdoptAction:
    return AdoptAction(action, obj.kind, obj.ref, obj.name, obj.tags.get(tags.KIND, ""), obj.tags.get(tags.UUID),
                       rename, reason)


def plan(ctx: DriverContext, pool: PoolSpec | str) -> AdoptReport:
    """What `adopt` would do on `pool` (reads only)."""
    return adopt(ctx, pool, dry_run=True)


def adopt(ctx: DriverContext, pool: PoolSpec | str, *, dry_run: bool = False, delete_orphans: bool = False,
          kinds: tuple[str, ...] = KINDS) -> AdoptReport:
    """Tag (and name) the pool's Java-made objects; report, and only with `delete_orphans`
    delete, the objects no live CloudStack object accounts for. `kinds` limits the run to
    volumes or snapshots (the service's two audit periods)."""
    spec = pools.resolve(ctx, pool)
    if not spec.uuid:
        raise ValidationError("pool", "the pool has no CloudStack id: nothing to tag its objects with")
    for k in kinds:
        if k not in KINDS:
            raise ValidationError("kinds", f"unknown kind {k!r} (known: {', '.join(KINDS)})")
    conn = ctx.conn(spec)
    live = _Live.read(ctx)  # before StorPool: an object made in between is seen live, never orphaned
    objs: list[SpVolume] = []
    if "volume" in kinds:
        objs.extend(conn.volumes())
    if "snapshot" in kinds:
        objs.extend(s for s in conn.snapshots() if not s.deleted and not s.transient)
    report = AdoptReport(spec.uuid, dry_run, delete_orphans)
    for obj in objs:
        if not pools.owns(spec, obj):
            continue
        reason = _orphan_reason(obj, live)
        if reason is not None:
            report.actions.append(_action(ORPHAN, obj, None, reason))
        elif obj.tags.get(tags.POOL) != spec.key:
            rename = _project_name(obj, spec, live)
            report.actions.append(_action(TAG, obj, rename if rename != obj.name else None, "made by the Java plugin"))
    if not dry_run:
        _apply(conn, spec, report)
    return report


def _apply(conn: StorPoolConn, spec: PoolSpec, report: AdoptReport) -> None:
    for a in report.actions:
        try:
            if a.action == TAG:
                new = pools.pool_tags(spec)
                if a.kind == "volume":
                    conn.volume_update(a.ref, tags=new)
                else:
                    conn.snapshot_update(a.ref, tags=new, rename=a.rename)
            elif report.delete_orphans:
                if a.kind == "volume":
                    conn.volume_delete(a.ref)
                else:
                    drop_snapshot(conn, a.ref)
            else:
                continue
        except ProjectError as exc:
            report.errors[a.ref] = str(exc)
            log.warning("adopt: %s %s: %s", a.action, a.ref, exc)
            continue
        report.done.append(a.ref)
        log.info("adopt: %s %s %s%s", a.action if a.action == TAG else "deleted", a.kind, a.ref,
                 f" (renamed {a.rename})" if a.rename else "")
