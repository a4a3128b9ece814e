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

Each object is classified by its `cs` tag through `tags.OBJECT_KINDS`, the table of every kind
either plugin makes. Like the Java plugin's StorPoolAbandonObjectsCollector, it reports every
object of a kind that stands for a CloudStack object (volume, snapshot, VM snapshot, template)
whose CloudStack object is gone: those are orphans, never touched unless `delete_orphans` is
given. Kinds no CloudStack record stands for (temporary copies, delay-delete backups, the Java
host listener's check volumes) are never orphans; a kind outside the table is reported and never
changed. A dry run changes nothing and lists what would be done.

An orphan is only what CloudStack cannot have been about to record: StorPool is listed before
CloudStack (an object CloudStack records first and StorPool makes next is then in both
listings), and just before an orphan is deleted it is read again from StorPool and looked up in
CloudStack by its uuid; one younger than `min_age` seconds before the run started, or without
a creation time, is spared. Five CloudStack listings and two StorPool listings per run, plus two
look-ups per orphan deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cloudstack_storpool import names
from cloudstack_storpool.bounds import Seconds
from cloudstack_storpool.driver import naming, pools, tags, templates
from cloudstack_storpool.driver.snapshots import drop_snapshot
from cloudstack_storpool.errors import ProjectError, ValidationError

if TYPE_CHECKING:
    from cloudstack_storpool.cloudstack.client import CloudStackClient
    from cloudstack_storpool.driver.context import DriverContext
    from cloudstack_storpool.poolconfig import PoolSpec
    from cloudstack_storpool.spconn import StorPoolConn
    from cloudstack_storpool.sprecords import SpVolume

log = logging.getLogger(__name__)

TAG = "tag"
ORPHAN = "orphan"
UNKNOWN = "unknown"
KINDS = ("volume", "snapshot")
MIN_AGE = 3600
"""Seconds an orphan must have existed before the run for `delete_orphans` to delete it: the
margin for a CloudStack record that shows in its listing only after its StorPool object exists,
and for the clocks of StorPool and of this host not agreeing."""

_LOOKUP: dict[str, Callable[[CloudStackClient, str], object | None]] = {
    tags.RECORD_VOLUME: lambda cs, uuid: cs.volume(uuid),
    tags.RECORD_SNAPSHOT: lambda cs, uuid: cs.snapshot(uuid),
    tags.RECORD_VM_SNAPSHOT: lambda cs, uuid: cs.vm_snapshot(uuid),
    tags.RECORD_TEMPLATE: lambda cs, uuid: cs.template(uuid),
}
"""CloudStack's look-up by id of each record kind in `tags.OBJECT_KINDS`."""


@dataclass(frozen=True)
class AdoptAction:
    action: str
    """`tag` (give the project's tag and name), `orphan` (its CloudStack object is gone) or
    `unknown` (a `cs` kind no plugin makes: reported, never changed)."""
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
    spared: dict[str, str] = field(default_factory=dict)
    """`~globalId` of an orphan `delete_orphans` did not delete -> why (too young, no creation
    time, CloudStack has it now, changed or gone since the listing)."""
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def orphans(self) -> list[AdoptAction]:
        return [a for a in self.actions if a.action == ORPHAN]

    @property
    def unknown(self) -> list[AdoptAction]:
        return [a for a in self.actions if a.action == UNKNOWN]


@dataclass
class _Live:
    """What CloudStack has, listed once per run (after StorPool)."""

    volumes: dict[str, str]
    """volume uuid, and the global id (or, for an old plugin's `/dev/storpool/<name>`, the
    name) its path gives -> volume uuid."""
    ids: dict[str, set[str]]
    """record kind (`tags.RECORD_*`) other than volume -> uuids."""

    @classmethod
    def read(cls, ctx: DriverContext) -> _Live:
        vols: dict[str, str] = {}
        for v in ctx.cloudstack.volumes():
            vols[v.id] = v.id
            for prefix in (names.BYID_PREFIX, names.LEGACY_PREFIX):
                if v.path and v.path.startswith(prefix):
                    vols[v.path.removeprefix(prefix)] = v.id
        return cls(vols, {
            tags.RECORD_SNAPSHOT: {s.id for s in ctx.cloudstack.snapshots()},
            tags.RECORD_VM_SNAPSHOT: {s.id for s in ctx.cloudstack.vm_snapshots()},
            tags.RECORD_TEMPLATE: {t.id for t in ctx.cloudstack.templates("all")},
        })

    def has(self, record: str, obj: SpVolume) -> bool:
        uuid = obj.tags.get(tags.UUID, "")
        if record == tags.RECORD_VOLUME:
            return any(key in self.volumes for key in (obj.global_id, obj.name, uuid) if key)
        return uuid in self.ids[record]


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


def _classify(obj: SpVolume, live: _Live) -> tuple[str | None, str]:
    """(ORPHAN, why) when the CloudStack object it stands for is gone, (UNKNOWN, why) for a kind
    outside the table, (None, what it is) when something accounts for it."""
    cs = obj.tags.get(tags.KIND, "")
    kind = tags.OBJECT_KINDS.get(cs)
    if kind is None:
        return UNKNOWN, f"cs={cs!r} is no kind a CloudStack StorPool plugin makes: left as it is"
    if kind.record is None or live.has(kind.record, obj):
        return None, kind.what
    return ORPHAN, f"CloudStack has no {kind.record.replace('_', ' ')} {obj.tags.get(tags.UUID, '')}".rstrip()


def _action(action: str, obj: SpVolume, rename: str | None, reason: str) -> AdoptAction:
    return AdoptAction(action, obj.kind, obj.ref, obj.name, obj.tags.get(tags.KIND, ""), obj.tags.get(tags.UUID),
                       rename, reason)


def plan(ctx: DriverContext, pool: PoolSpec | str) -> AdoptReport:
    """What `adopt` would do on `pool` (reads only)."""
    return adopt(ctx, pool, dry_run=True)


def adopt(ctx: DriverContext, pool: PoolSpec | str, *, dry_run: bool = False, delete_orphans: bool = False,
          kinds: tuple[str, ...] = KINDS, min_age: Seconds = MIN_AGE) -> AdoptReport:
    """Tag (and name) the pool's Java-made objects; report, and only with `delete_orphans`
    delete, the objects whose CloudStack object is gone and that existed `min_age` seconds
    before the run. `kinds` limits the run to volumes or snapshots (the service's two audit
    periods)."""
    spec = pools.resolve(ctx, pool)
    if not spec.uuid:
        raise ValidationError("pool", "the pool has no CloudStack id: nothing to tag its objects with")
    for k in kinds:
        if k not in KINDS:
            raise ValidationError("kinds", f"unknown kind {k!r} (known: {', '.join(KINDS)})")
    if isinstance(min_age, bool) or not isinstance(min_age, int) or min_age < 0:
        raise ValidationError("min_age", f"must be a non-negative number of seconds, got {min_age!r}")
    conn = ctx.conn(spec)
    started = ctx.clock()
    # StorPool first: CloudStack records an object before StorPool makes it, so whatever this
    # listing holds was already recorded when CloudStack is listed next.
    objs: list[SpVolume] = []
    if "volume" in kinds:
        objs.extend(conn.volumes())
    if "snapshot" in kinds:
        objs.extend(s for s in conn.snapshots() if not s.deleted and not s.transient)
    live = _Live.read(ctx)
    report = AdoptReport(spec.uuid, dry_run, delete_orphans)
    for obj in objs:
        if not pools.owns(spec, obj):
            continue
        verdict, reason = _classify(obj, live)
        if verdict is not None:
            report.actions.append(_action(verdict, obj, None, reason))
        elif obj.tags.get(tags.POOL) != spec.key:
            rename = _project_name(obj, spec, live)
            report.actions.append(_action(TAG, obj, rename if rename != obj.name else None,
                                          f"made by the Java plugin: {reason}"))
    if not dry_run:
        _apply(ctx, conn, spec, report, started - min_age)
    return report


def _spare_reason(ctx: DriverContext, conn: StorPoolConn, spec: PoolSpec, a: AdoptAction,
                  made_before: float) -> str | None:
    """Why the orphan `a` must not be deleted now, read again from StorPool and CloudStack; None
    when it still is one."""
    kind = tags.OBJECT_KINDS[a.cs]
    if not a.uuid or kind.record is None:
        return "no uuid tag to look CloudStack up by"
    now = conn.volume(a.ref) if a.kind == "volume" else conn.snapshot(a.ref)
    if now is None or getattr(now, "deleted", False):
        return "gone from StorPool since the listing"
    if (now.tags.get(tags.UUID), now.tags.get(tags.KIND)) != (a.uuid, a.cs) or not pools.owns(spec, now):
        return "its tags changed since the listing"
    if not now.created:
        return "StorPool gives no creation time: its age is unknown"
    if now.created > made_before:
        return "made too recently (during the run or within its min_age)"
    if _LOOKUP[kind.record](ctx.cloudstack, a.uuid) is not None:
        return f"CloudStack has the {kind.record.replace('_', ' ')} now"
    return None


def _apply(ctx: DriverContext, conn: StorPoolConn, spec: PoolSpec, report: AdoptReport, made_before: float) -> None:
    for a in report.actions:
        try:
            if a.action == TAG:
                new = pools.pool_tags(spec)
                if a.kind == "volume":
                    conn.volume_update(a.ref, tags=new)
                else:
                    conn.snapshot_update(a.ref, tags=new, rename=a.rename)
            elif a.action == ORPHAN and report.delete_orphans:
                spare = _spare_reason(ctx, conn, spec, a, made_before)
                if spare is not None:
                    report.spared[a.ref] = spare
                    log.info("adopt: orphan %s %s kept: %s", a.kind, a.ref, spare)
                    continue
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
