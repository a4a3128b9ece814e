"""Periodic work of the driver service: template-cache garbage collection.

Every `storpool.gc.interval` seconds (read again each cycle, so an operator's change through
CloudStack applies without a restart; 0 pauses it) the collector runs once. Several service
processes may each run it: every deletion accepts "already gone", so the worst case is a
wasted list call, never a wrong deletion.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from cloudstack_storpool.driver import gc
from cloudstack_storpool.driver.context import DriverContext

log = logging.getLogger(__name__)

INTERVAL_SETTING = "storpool.gc.interval"
IDLE_RECHECK = 60.0
"""While GC is disabled (interval 0), how often to look at the setting again."""


class PeriodicGc:
    def __init__(self, ctx: DriverContext, *, interval: Callable[[], float] | None = None) -> None:
        self.ctx = ctx
        self._interval = interval or self._setting
        self.stop = threading.Event()
        self.runs = 0
        self.last: gc.GcReport | None = None
        self._thread: threading.Thread | None = None

    def _setting(self) -> float:
        value = self.ctx.settings.get(INTERVAL_SETTING)
        return float(value) if isinstance(value, int | float) else 0.0

    def once(self) -> gc.GcReport | None:
        """One cycle; a failure is logged and retried next cycle, never fatal to the service."""
        try:
            report = gc.run(self.ctx)
        except Exception as exc:
            log.warning("periodic GC failed (will retry): %s", exc)
            return None
        self.runs += 1
        self.last = report
        if report.done or report.errors:
            log.info("periodic GC: deleted %d object(s), %d error(s)", len(report.done), len(report.errors))
        return report

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                every = self._interval()
            except Exception as exc:
                log.warning("cannot read %s (%s); GC paused for this cycle", INTERVAL_SETTING, exc)
                every = 0.0
            if every <= 0:
                self.stop.wait(IDLE_RECHECK)
                continue
            if self.stop.wait(every):
                return
            self.once()

    def start(self) -> PeriodicGc:
        self._thread = threading.Thread(target=self._loop, name="periodic-gc", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 30.0) -> None:
        self.stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
