"""Liveness of work in progress, judged from StorPool: a stamp its owner keeps refreshing.

A template fill holds its lock (the fill volume) for as long as its copy runs, which may be
hours. Judging such a lock by its age either blocks everyone for hours after its owner crashed
or takes it over from an owner that is still copying. Instead the owner refreshes an `alive`
tag on the lock object (one VolumeUpdate every quarter of the limit) while it works, and a
waiter takes the lock over only when it has watched the stamp stay unchanged for longer than
the limit.

The waiter compares what it *sees change*, measured on its own clock, and never compares the
stamp with its clock: management servers' clocks differ, and a skew larger than the limit
would otherwise make a live owner look dead. The price is that a waiter arriving long after a
crash still watches for one limit before taking over.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from cloudstack_storpool.driver import tags
from cloudstack_storpool.errors import ProjectError

if TYPE_CHECKING:
    from cloudstack_storpool.spconn import StorPoolConn
    from cloudstack_storpool.sprecords import SpVolume

log = logging.getLogger(__name__)

BEATS_PER_LIMIT = 4
"""The owner refreshes its stamp this many times per limit: three lost refreshes in a row
(a slow API, a retried call) still do not make a live owner look dead."""


def first_stamp(clock: Callable[[], float]) -> str:
    """The `alive` value an object is created with (its owner's clock, epoch seconds)."""
    return str(int(clock()))


def last_sign_of_life(summary: SpVolume) -> float:
    """Epoch seconds of an object's last stamp: `alive`, else `started`, else StorPool's own
    creation time (so an object without stamps is never immortal). For age-based judgements
    on a scale where clock skew does not matter (garbage collection after a day)."""
    found = summary.tags
    for key in (tags.ALIVE, tags.STARTED):
        try:
            return float(found.get(key, ""))
        except ValueError:
            continue
    return summary.created


class Heartbeat:
    """`with Heartbeat(conn, ref, limit, clock):` refreshes `ref`'s `alive` tag in a background
    thread until the block ends. A failed refresh is logged, not raised: the owner's work is
    what matters, and a waiter needs several missed refreshes in a row before it takes over.
    `wait` is the thread's pause between refreshes (`threading.Event.wait` unless a test keeps
    fake time)."""

    def __init__(self, conn: StorPoolConn, ref: str, limit: float, clock: Callable[[], float],
                 wait: Callable[[threading.Event, float], bool] = threading.Event.wait) -> None:
        self.conn, self.ref, self.clock, self.wait = conn, ref, clock, wait
        self.interval = max(limit / BEATS_PER_LIMIT, 0.05)
        self.beats = 0
        self._last = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"alive-{ref}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()

    def _stamp(self) -> str:
        # Strictly increasing even if the clock is not (a stepped clock, a test's frozen one).
        self._last = max(int(self.clock()), self._last + 1)
        return str(self._last)

    def _run(self) -> None:
        while not self.wait(self._stop, self.interval):
            try:
                self.conn.volume_update(self.ref, tags={tags.ALIVE: self._stamp()})
                self.beats += 1
            except ProjectError as exc:
                log.warning("could not refresh the liveness stamp of %s: %s", self.ref, exc)


class Watch:
    """A waiter's view of someone else's stamped object: dead once its stamp (or the object
    itself, by global id) has not changed for longer than `limit` seconds of the waiter's clock."""

    def __init__(self, limit: float, clock: Callable[[], float]) -> None:
        self.limit, self.clock = limit, clock
        self._seen: tuple[str, str] | None = None
        self._since = 0.0

    def dead(self, summary: SpVolume) -> bool:
        stamp = summary.tags.get(tags.ALIVE) or summary.tags.get(tags.STARTED, "")
        seen = (summary.global_id, stamp)
        now = self.clock()
        if seen != self._seen:
            self._seen, self._since = seen, now
            return False
        return now - self._since > self.limit

    @property
    def unchanged_for(self) -> float:
        return self.clock() - self._since
