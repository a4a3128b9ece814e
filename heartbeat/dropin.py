"""`kvmspheartbeat.sh -c`: the reboot CloudStack's own KVM agent asks for, decided by evidence.

CloudStack's KVM agent (StorPoolStoragePool.createHeartBeatCommand) runs
`kvmspheartbeat.sh -c` whenever its own check of the StorPool client failed, and the stock
script reboots through sysrq at once. That check fails when `storpool service list` merely did
not answer, so healthy hosts get fenced. This drop-in keeps the name and the arguments and
changes the decision: it reboots only when this project's host heartbeat
(`cloudstack-storpool heartbeat run`) has a *fresh* verdict that the client is down
(`max_failures` fail rounds in a row, each one StorPool saying so) *and* idle (no I/O in flight
for it). Anything else (no status file, a stale one, ok, unknown, I/O in flight or unreadable)
is logged and refused, and the host keeps running.

Configuration comes from the environment, because CloudStack passes nothing but `-c`:
`CSSP_HEARTBEAT_STATUS` (the loop's status file), `CSSP_HEARTBEAT_MAX_AGE` (seconds a verdict
stays fresh; default three loop intervals, at least 30 s), `CSSP_SYSRQ_TRIGGER` and
`CSSP_SYNC_WAIT` (tests point them at a file and 0).
"""

from __future__ import annotations

import logging
import logging.handlers
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudstack_storpool.heartbeat.hostloop import DEFAULT_STATUS_FILE, SYSRQ_TRIGGER, parse_status, read_status

log = logging.getLogger("kvmspheartbeat")

USAGE = "Usage: kvmspheartbeat.sh -c   (reboot this host, if its StorPool heartbeat confirms the client is dead)"
REFUSED = 2
MIN_MAX_AGE = 30.0


@dataclass(frozen=True)
class Decision:
    reboot: bool
    reason: str


# What the rule reads; a status without one of them (or with one of the wrong type) is not a verdict.
DECIDING_FIELDS = ("time", "interval", "result", "consecutive_down", "max_failures", "idle")


def decide(status: dict[str, Any] | None, *, now: float, max_age: float | None = None) -> Decision:
    """The whole rule, without I/O: reboot only on a fresh, confirmed, idle "fail".

    A field that is not what the loop writes (NaN, Infinity, a string or a boolean where a number
    belongs) makes the verdict unknown, never a reason to reboot: with `time: NaN` or
    `interval: Infinity` every age would pass as fresh."""
    if status is None:
        return Decision(False, "no heartbeat status: is cloudstack-storpool-heartbeat running on this host?")
    if max_age is not None and not (math.isfinite(max_age) and max_age > 0):
        return Decision(False, f"the freshness limit must be a finite number of seconds > 0, not {max_age!r}")
    try:
        status = parse_status(status, required=DECIDING_FIELDS)
    except ValueError as exc:
        return Decision(False, f"the heartbeat status file cannot be read: {exc}")
    when, interval = status["time"], status["interval"]
    down, needed = status["consecutive_down"], status["max_failures"]
    limit = max_age if max_age is not None else max(3 * interval, MIN_MAX_AGE)
    age = now - when
    if when <= 0 or age > limit or age < -limit:
        return Decision(False, f"the last heartbeat verdict is stale ({age:.0f} s old, fresh is {limit:.0f} s)")
    result = status.get("result")
    if result != "fail":
        return Decision(False, f"the last heartbeat verdict is {result!r} ({status.get('reason', '')}), not 'fail'")
    if needed < 1 or down < needed:
        return Decision(False, f"StorPool said the client is down in {down} rounds in a row; {needed} are needed")
    idle = status.get("idle")
    if idle is not True:
        what = "still doing I/O" if idle is False else "of unknown I/O activity"
        return Decision(False, f"the client is down but {what}")
    return Decision(True, f"client {status.get('client_id')} down in {down} rounds in a row and idle "
                          f"({status.get('reason', '')})")


def _reboot(trigger: str, sync_wait: float) -> None:
    """As the stock script: start a sync but do not wait on it past `sync_wait` (storage may be
    gone), then sysrq 'b'."""
    threading.Thread(target=os.sync, daemon=True).start()
    time.sleep(sync_wait)
    with open(trigger, "w") as fh:
        fh.write("b")


def _logging() -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if os.path.exists("/dev/log"):
        handlers.append(logging.handlers.SysLogHandler(address="/dev/log"))
    for h in handlers:
        h.setFormatter(logging.Formatter("heartbeat: kvmspheartbeat.sh: %(message)s"))
        log.addHandler(h)
    log.setLevel(logging.INFO)
    log.propagate = False


def main(argv: list[str] | None = None, env: dict[str, str] | None = None,
         clock: Callable[[], float] = time.time) -> int:
    args = sys.argv[1:] if argv is None else argv
    env = dict(os.environ) if env is None else env
    _logging()
    if any(a != "-c" for a in args):
        print(USAGE, file=sys.stderr)
        return 1
    if "-c" not in args:
        return 0  # the stock script does nothing without -c either
    status_file = env.get("CSSP_HEARTBEAT_STATUS", DEFAULT_STATUS_FILE)
    try:
        max_age = float(env["CSSP_HEARTBEAT_MAX_AGE"]) if env.get("CSSP_HEARTBEAT_MAX_AGE") else None
        sync_wait = float(env.get("CSSP_SYNC_WAIT", "5"))
    except ValueError:
        max_age = sync_wait = math.nan
    if (max_age is not None and not (math.isfinite(max_age) and max_age > 0)) \
            or not (math.isfinite(sync_wait) and sync_wait >= 0):
        log.error("CSSP_HEARTBEAT_MAX_AGE must be a finite number > 0 and CSSP_SYNC_WAIT one >= 0; refusing to reboot")
        return REFUSED
    try:
        status = read_status(Path(status_file))
    except (OSError, ValueError) as exc:
        status = None
        log.error("cannot read %s: %s", status_file, exc)
    decision = decide(status, now=clock(), max_age=max_age)
    if not decision.reboot:
        log.warning("CloudStack asked for a reboot; refused: %s", decision.reason)
        return REFUSED
    trigger = env.get("CSSP_SYSRQ_TRIGGER", SYSRQ_TRIGGER)
    log.critical("rebooting this host through %s: %s", trigger, decision.reason)
    for h in log.handlers:
        h.flush()
    _reboot(trigger, sync_wait)
    return 0


if __name__ == "__main__":
    sys.exit(main())
