"""Periodic work of the driver service: template-cache garbage collection, the two statistics
collections, the delay-delete sync, and the audit of objects no live CloudStack object
accounts for.

Each task runs every `<setting>` seconds, the setting read again each cycle so that an
operator's change through CloudStack applies without a restart (0 pauses the task). Several
service processes may each run them: every deletion accepts "already gone" and every collection
only reads, so the worst case is a wasted list call, never a wrong deletion.

| task | setting | what |
|---|---|---|
| `PeriodicGc` | `storpool.gc.interval` | caches of deleted templates, old temporaries |
| `capacity` | `storpool.storage.stats.interval` | one VolumeTemplatesStatus per cluster into the stats cache |
| `volumes` | `storpool.volumes.stats.interval` | one VolumesSpace per cluster into the stats cache |
| `delay-delete` | `storpool.list.snapshots.delete.after.interval` | reports the deleted volumes whose backups expired |
| `volume-audit`, `snapshot-audit` | `storpool.volume.tags.checkup`, `...snapshot...` | orphans logged (`adopt` dry run) |
| `snapshot-exports` | `storpool.snapshot.recovery.from.remote.check` | revokes exports whose remote copy is complete |
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from cloudstack_storpool import logs
from cloudstack_storpool.driver import adopt, gc, recovery, snapshotcopy, stats
from cloudstack_storpool.driver.context import DriverContext

log = logging.getLogger(__name__)

INTERVAL_SETTING = "storpool.gc.interval"
AUDIT_SETTINGS = {"volume": "storpool.volume.tags.checkup", "snapshot": "storpool.snapshot.tags.checkup"}
IDLE_RECHECK = 60.0
"""While a task is disabled (interval 0), how often to look at its setting again."""


class PeriodicTask:
    """Runs `work(ctx)` every `setting` seconds on its own thread until closed."""

    def __init__(self, ctx: DriverContext, name: str, setting: str, work: Callable[[DriverContext], Any], *,
                 interval: Callable[[], float] | None = None,
                 on_result: Callable[[str, Any], None] | None = None) -> None:
        self.ctx = ctx
        self.name = name
        self.setting = setting
        self._work = work
        self._interval = interval or self._setting
        self._on_result = on_result
        self.stop = threading.Event()
        self.runs = 0
        self.failures = 0
        self.last: Any = None
        self._thread: threading.Thread | None = None

    def work(self) -> Any:
        raise NotImplementedError

    def _setting(self) -> float:
        value = self.ctx.settings.get(self.setting)
        return float(value) if isinstance(value, int | float) else 0.0

    def once(self) -> Any:
        """One cycle; a failure is logged and retried next cycle, never fatal to the service."""
        try:
            with logs.context(f"{self.name}-{self.runs + self.failures + 1}"):
                result = self._work(self.ctx)
        except Exception as exc:
            self.failures += 1
            log.warning("periodic %s failed (will retry): %s", self.name, exc)
            if self._on_result is not None:
                self._on_result(self.name, exc)
            return None
        self.runs += 1
        self.last = result
        if self._on_result is not None:
            self._on_result(self.name, result)
        return result

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                every = self._interval()
            except Exception as exc:
                log.warning("cannot read %s (%s); %s paused for this cycle", self.setting, exc, self.name)
                every = 0.0
            if every <= 0:
                self.stop.wait(IDLE_RECHECK)
                continue
            if self.stop.wait(every):
                return
            self.once()

    def start(self) -> PeriodicTask:
        self._thread = threading.Thread(target=self._loop, name=f"periodic-{self.name}", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 30.0) -> None:
        self.stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


def _gc_cycle(ctx: DriverContext) -> gc.GcReport:
    report = gc.run(ctx)
    if report.done or report.errors:
        log.info("periodic GC: deleted %d object(s), %d error(s)", len(report.done), len(report.errors))
    return report


class PeriodicGc(PeriodicTask):
    def __init__(self, ctx: DriverContext, *, interval: Callable[[], float] | None = None,
                 on_result: Callable[[str, Any], None] | None = None) -> None:
        super().__init__(ctx, "gc", INTERVAL_SETTING, _gc_cycle, interval=interval, on_result=on_result)


def _audit(kind: str) -> Callable[[DriverContext], list[adopt.AdoptAction]]:
    """Report (never delete) the pools' objects of one kind that CloudStack does not account for."""

    def work(ctx: DriverContext) -> list[adopt.AdoptAction]:
        orphans = []
        for pool in ctx.pools.pools:
            report = adopt.adopt(ctx, pool, dry_run=True, kinds=(kind,))
            for o in report.orphans:
                log.warning("abandoned StorPool %s %s on pool %s (cs=%s, uuid=%s): %s", o.kind, o.ref, pool.name,
                            o.cs, o.uuid, o.reason)
            for o in report.unknown:
                log.warning("unclassified StorPool %s %s on pool %s (cs=%s, uuid=%s): %s", o.kind, o.ref, pool.name,
                            o.cs, o.uuid, o.reason)
            orphans.extend(report.orphans)
        return orphans
    return work


def audit_task(ctx: DriverContext, kind: str, on_result: Callable[[str, Any], None] | None = None) -> PeriodicTask:
    """The abandoned-object audit of one kind (`volume`, `snapshot`) on its Java plugin setting."""
    return PeriodicTask(ctx, f"{kind}-audit", AUDIT_SETTINGS[kind], _audit(kind), on_result=on_result)


def service_tasks(ctx: DriverContext, cache: stats.StatsCache, tracker: recovery.ExpiryTracker,
                  on_result: Callable[[str, Any], None] | None = None) -> list[PeriodicTask]:
    """Every periodic task of a service process, not started."""
    return [
        PeriodicGc(ctx, on_result=on_result),
        *(PeriodicTask(ctx, kind, setting, partial(cache.refresh, kind=kind), on_result=on_result)
          for kind, setting in stats.INTERVALS.items()),
        PeriodicTask(ctx, "delay-delete", "storpool.list.snapshots.delete.after.interval", tracker.sync,
                     on_result=on_result),
        *(audit_task(ctx, kind, on_result=on_result) for kind in AUDIT_SETTINGS),
        PeriodicTask(ctx, "snapshot-exports", snapshotcopy.RECOVERY_SETTING, snapshotcopy.release_exports,
                     on_result=on_result),
    ]
