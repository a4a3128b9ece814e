"""Garbage collection of what CloudStack no longer needs (the Java plugin only logs these).

* Cached templates (`cs=template`) whose template CloudStack no longer has: deleted on every
  pool. CloudStack is asked once per run (one paged listTemplates, then a set lookup per
  cache); a cache whose template is not listed is confirmed by id, so "no longer has" means
  CloudStack *answered* that the template does not exist. If CloudStack cannot be asked,
  nothing is deleted. Volumes cloned from a cache keep their data:
  StorPool keeps a deleted snapshot until its last child is gone.
* Temporary objects (`cs=temporary`: template fills, migration leftovers) whose last sign of
  life (`alive` tag, else `started`, else StorPool's creation time) is older than
  `storpool.gc.temporary.age` seconds: a live fill refreshes `alive` and is left alone.

Only objects tagged with one of the configured pools are considered, so two installations
sharing a StorPool cluster never collect each other's objects. `run(dry_run=True)` returns the
plan and changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cloudstack_storpool.bounds import Seconds
from cloudstack_storpool.driver import liveness, pools, tags, templates
from cloudstack_storpool.errors import ProjectError, ValidationError
from cloudstack_storpool.uuids import Uuid, check_uuid, is_uuid

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
    return ctx.clock() - liveness.last_sign_of_life(obj)


class _TemplatesInCloudStack:
    """Whether CloudStack still has a template, asked once per run: one paged listTemplates
    gives every template it lists, and only a cache whose template is *not* listed is asked
    about by id, so a template the listing does not show (another filter's, a project's)
    is never taken for deleted. None: CloudStack could not be asked (nothing is deleted)."""

    def __init__(self, ctx: DriverContext, report: GcReport) -> None:
        self.ctx, self.report = ctx, report
        self._listed: set[str] | None = None
        self._asked: dict[str, bool | None] = {}
        self._failed = False

    def exists(self, tuuid: str) -> bool | None:
        if self._listed is None and not self._failed:
            try:
                self._listed = {t.id.lower() for t in self.ctx.cloudstack.templates()}
            except ProjectError as exc:
                self._failed = True
                self.report.errors["templates"] = f"cannot list CloudStack's templates: {exc}"
        if self._failed:
            return None
        assert self._listed is not None
        if tuuid in self._listed:
            return True
        if tuuid not in self._asked:
            try:
                self._asked[tuuid] = self.ctx.cloudstack.template(tuuid) is not None
            except ProjectError as exc:
                self.report.errors[f"template:{tuuid}"] = f"cannot ask CloudStack: {exc}"
                self._asked[tuuid] = None
        return self._asked[tuuid]


def plan(ctx: DriverContext, *, temporary_age: Seconds | None = None, report: GcReport | None = None) -> list[GcAction]:
    """What a collection would delete now (reads only): per StorPool cluster one SnapshotsList
    and one VolumesList, and one paged listTemplates for the whole run."""
    max_age = _temporary_age(ctx, temporary_age)
    report = report if report is not None else GcReport(dry_run=True)
    in_cloudstack = _TemplatesInCloudStack(ctx, report)
    actions: list[GcAction] = []
    for specs in pools.by_cluster(ctx):
        conn = ctx.conn(specs[0])
        for s in conn.snapshots():
            pool = pools.owner(specs, s)
            if pool is None or s.deleted:
                continue
            action = _snapshot_action(ctx, s, pool, max_age, in_cloudstack, report)
            if action is not None:
                actions.append(action)
        for v in conn.volumes():
            vtags = v.tags
            pool = pools.owner(specs, v)
            if pool is not None and vtags.get(tags.KIND) == tags.TEMPORARY and _age(ctx, v) > max_age:
                actions.append(GcAction(TEMPORARY_VOLUME, pool.uuid, v.name, v.global_id, vtags.get(tags.UUID),
                                        f"temporary for more than {max_age} s"))
    return actions


def _snapshot_action(ctx: DriverContext, s: Any, pool: Any, max_age: int, in_cloudstack: _TemplatesInCloudStack,
                     report: GcReport) -> GcAction | None:
    """A cached template of a deleted template, or an old temporary snapshot; else None."""
    stags = s.tags or {}
    kind = stags.get(tags.KIND)
    if kind == tags.TEMPORARY and _age(ctx, s) > max_age:
        return GcAction(TEMPORARY_SNAPSHOT, pool.uuid, s.name, s.global_id, stags.get(tags.UUID),
                        f"temporary for more than {max_age} s")
    if kind != tags.TEMPLATE:
        return None
    tuuid = stags.get(tags.UUID, "")
    if not is_uuid(tuuid):
        return None
    exists = in_cloudstack.exists(tuuid)
    if exists:
        report.kept_templates += 1
    if exists is not False:
        return None
    return GcAction(CACHED_TEMPLATE, pool.uuid, s.name, s.global_id, tuuid, "template deleted in CloudStack")


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


def drop_template(ctx: DriverContext, template_uuid: Uuid) -> list[str]:
    """A template was deleted in CloudStack: delete its caches on every pool now (without
    waiting for the periodic run). Returns the pools whose cache was deleted."""
    tuuid = check_uuid(template_uuid, "template_uuid")
    if ctx.cloudstack.template(tuuid) is not None:
        raise ValidationError("template_uuid", f"CloudStack still has template {tuuid}; its caches are in use")
    dropped = []
    for pool in ctx.pools.pools:
        if templates.drop(ctx, pool, tuuid):
            dropped.append(pool.uuid)
    return dropped
