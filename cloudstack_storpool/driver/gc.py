"""Garbage collection of what CloudStack no longer needs (the Java plugin only logs these).

* Cached templates (`cs=template`) whose template CloudStack no longer has: deleted on every
  pool. "No longer has" means CloudStack *answered* that the template does not exist; if
  CloudStack cannot be asked, nothing is deleted. Volumes cloned from a cache keep their data:
  StorPool keeps a deleted snapshot until its last child is gone.
* Temporary objects (`cs=temporary`: template fills, migration leftovers) older than
  `storpool.gc.temporary.age` seconds, by their `started` tag or StorPool's creation time: a
  live fill is younger than that and is left alone.

Only objects tagged with one of the configured pools are considered, so two installations
sharing a StorPool cluster never collect each other's objects. `run(dry_run=True)` returns the
plan and changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cloudstack_storpool.bounds import Seconds
from cloudstack_storpool.driver import naming, pools, tags, templates
from cloudstack_storpool.errors import ProjectError, ValidationError

if TYPE_CHECKING:
    from cloudstack_storpool.driver.context import DriverContext

log = logging.getLogger(__name__)

CACHED_TEMPLATE = "cached-template"
TEMPORARY_VOLUME = "temporary-volume"
TEMPORARY_SNAPSHOT = "temporary-snapshot"


@dataclass(frozen=True)
class GcAction:
    kind: str
    pool: str
    name: str
    global_id: str
    uuid: str | None
    reason: str


@dataclass
class GcReport:
    dry_run: bool
    planned: list[GcAction] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    """Names of the objects deleted (empty on a dry run)."""
    errors: dict[str, str] = field(default_factory=dict)
    """Object name (or `template:<uuid>`) -> why it was skipped or failed."""
    kept_templates: int = 0
    """Cached templates kept because CloudStack still has their template."""


def _temporary_age(ctx: DriverContext, given: int | None) -> int:
    if given is not None:
        if isinstance(given, bool) or not isinstance(given, int) or given < 0:
            raise ValidationError("temporary_age", f"must be a non-negative number of seconds, got {given!r}")
        return given
    value = ctx.settings.get("storpool.gc.temporary.age")
    return int(value) if isinstance(value, int) else 86400


def _age(ctx: DriverContext, obj: Any) -> float:
    return ctx.clock() - templates.started_at(obj)


def plan(ctx: DriverContext, *, temporary_age: Seconds | None = None, report: GcReport | None = None) -> list[GcAction]:
    """What a collection would delete now (reads only)."""
    max_age = _temporary_age(ctx, temporary_age)
    report = report if report is not None else GcReport(dry_run=True)
    actions: list[GcAction] = []
    template_exists: dict[str, bool | None] = {}

    def still_in_cloudstack(tuuid: str) -> bool | None:
        if tuuid not in template_exists:
            try:
                template_exists[tuuid] = ctx.cloudstack.template(tuuid) is not None
            except ProjectError as exc:
                report.errors[f"template:{tuuid}"] = f"cannot ask CloudStack: {exc}"
                template_exists[tuuid] = None
        return template_exists[tuuid]

    for specs in pools.by_cluster(ctx):
        by_uuid = {p.uuid: p for p in specs if p.uuid}
        conn = ctx.conn(specs[0])
        for s in conn.snapshots():
            stags = s.tags or {}
            pool = by_uuid.get(stags.get(tags.POOL, ""))
            if pool is None or getattr(s, "deleted", False):
                continue
            kind = stags.get(tags.KIND)
            if kind == tags.TEMPLATE:
                tuuid = stags.get(tags.UUID, "")
                try:
                    naming.check_uuid(tuuid, "uuid")
                except ValidationError:
                    continue
                exists = still_in_cloudstack(tuuid)
                if exists is None:
                    continue
                if exists:
                    report.kept_templates += 1
                    continue
                actions.append(GcAction(CACHED_TEMPLATE, pool.uuid, s.name, s.globalId, tuuid,
                                        "template deleted in CloudStack"))
            elif kind == tags.TEMPORARY and _age(ctx, s) > max_age:
                actions.append(GcAction(TEMPORARY_SNAPSHOT, pool.uuid, s.name, s.globalId, stags.get(tags.UUID),
                                        f"temporary for more than {max_age} s"))
        for v in conn.volumes():
            vtags = v.tags or {}
            pool = by_uuid.get(vtags.get(tags.POOL, ""))
            if pool is None or vtags.get(tags.KIND) != tags.TEMPORARY:
                continue
            if _age(ctx, v) > max_age:
                actions.append(GcAction(TEMPORARY_VOLUME, pool.uuid, v.name, v.globalId, vtags.get(tags.UUID),
                                        f"temporary for more than {max_age} s"))
    return actions


def run(ctx: DriverContext, *, dry_run: bool = False, temporary_age: Seconds | None = None) -> GcReport:
    """Plan, then (unless `dry_run`) delete. One failure does not stop the others."""
    report = GcReport(dry_run=dry_run)
    report.planned = plan(ctx, temporary_age=temporary_age, report=report)
    if dry_run:
        return report
    for action in report.planned:
        conn = ctx.conn(action.pool)
        try:
            if action.kind == TEMPORARY_VOLUME:
                conn.volume_delete("~" + action.global_id, on_attached="detachForce")
            else:
                conn.snapshot_delete("~" + action.global_id)
        except ProjectError as exc:
            report.errors[action.name] = str(exc)
            log.warning("gc: could not delete %s: %s", action.name, exc)
            continue
        log.info("gc: deleted %s %s (%s)", action.kind, action.name, action.reason)
        report.done.append(action.name)
    return report


def drop_template(ctx: DriverContext, template_uuid: str) -> list[str]:
    """A template was deleted in CloudStack: delete its caches on every pool now (without
    waiting for the periodic run). Returns the pools whose cache was deleted."""
    tuuid = naming.check_uuid(template_uuid, "template_uuid")
    if ctx.cloudstack.template(tuuid) is not None:
        raise ValidationError("template_uuid", f"CloudStack still has template {tuuid}; its caches are in use")
    dropped = []
    for pool in ctx.pools.pools:
        if templates.drop(ctx, pool, tuuid):
            dropped.append(pool.uuid)
    return dropped
