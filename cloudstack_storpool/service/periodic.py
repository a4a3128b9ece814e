"""Periodic work of the driver service: template-cache garbage collection, and the audit of
objects no live CloudStack object accounts for.

Each job runs every `<setting>` seconds (read again each cycle, so an operator's change through
CloudStack applies without a restart; 0 pauses it). Several service processes may each run
them: every deletion accepts "already gone", so the worst case is a wasted list call, never a
wrong deletion; the audit only reports.

* GC: `storpool.gc.interval`.
* Audit (like the Java plugin's StorPoolAbandonObjectsCollector, on its own settings):
  `storpool.volume.tags.checkup` for volumes, `storpool.snapshot.tags.checkup` for snapshots;
  a dry `adopt` of every pool, each orphan logged as a warning.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from cloudstack_storpool.driver import adopt, gc
from cloudstack_storpool.driver.context import DriverContext

log = logging.getLogger(__name__)

INTERVAL_SETTING = "storpool.gc.interval"
AUDIT_SETTINGS = {"volume": "storpool.volume.tags.checkup", "snapshot": "storpool.snapshot.tags.checkup"}
IDLE_RECHECK = 60.0
"""While a job is disabled (interval 0), how often to look at its setting again."""


class Periodic:
    """One background job: `work()` every `setting` seconds; a failure is logged and retried
    next cycle, never fatal to the service."""

    setting = ""
    label = ""

    def __init__(self, ctx: DriverContext, *, interval: Callable[[], float] | None = None) -> None:
        self.ctx = ctx
        self._interval = interval or self._setting
        self.stop = threading.Event()
        self.runs = 0
        self.last: Any = None
        self._thread: threading.Thread | None = None

    def work(self) -> Any:
        raise NotImplementedError

    def _setting(self) -> float:
        value = self.ctx.settings.get(self.setting)
        return float(value) if isinstance(value, int | float) else 0.0

    def once(self) -> Any:
        try:
            result = self.work()
        except Exception as exc:
            log.warning("periodic %s failed (will retry): %s", self.label, exc)
            return None
        self.runs += 1
        self.last = result
        return result

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                every = self._interval()
            except Exception as exc:
                log.warning("cannot read %s (%s); %s paused for this cycle", self.setting, exc, self.label)
                every = 0.0
            if every <= 0:
                self.stop.wait(IDLE_RECHECK)
                continue
            if self.stop.wait(every):
                return
            self.once()

    def start(self) -> Periodic:
        self._thread = threading.Thread(target=self._loop, name=f"periodic-{self.label}", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 30.0) -> None:
        self.stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


class PeriodicGc(Periodic):
    setting = INTERVAL_SETTING
    label = "gc"

    def work(self) -> gc.GcReport:
        report = gc.run(self.ctx)
        if report.done or report.errors:
            log.info("periodic GC: deleted %d object(s), %d error(s)", len(report.done), len(report.errors))
        return report


class PeriodicAudit(Periodic):
    """Reports (never deletes) the pools' objects of one kind that CloudStack does not account for."""

    def __init__(self, ctx: DriverContext, kind: str, **kwargs: Any) -> None:
        self.kind = kind
        self.setting = AUDIT_SETTINGS[kind]
        self.label = f"{kind}-audit"
        super().__init__(ctx, **kwargs)

    def work(self) -> list[adopt.AdoptAction]:
        orphans = []
        for pool in self.ctx.pools.pools:
            report = adopt.adopt(self.ctx, pool, dry_run=True, kinds=(self.kind,))
            for o in report.orphans:
                log.warning("abandoned StorPool %s %s on pool %s (cs=%s, uuid=%s): %s", o.kind, o.ref, pool.name,
                            o.cs, o.uuid, o.reason)
            orphans.extend(report.orphans)
        return orphans


def start_all(ctx: DriverContext) -> list[Periodic]:
    """Everything the service runs in the background."""
    return [PeriodicGc(ctx).start(), *(PeriodicAudit(ctx, k).start() for k in AUDIT_SETTINGS)]
