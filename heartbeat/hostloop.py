"""The per-host heartbeat loop: does StorPool still see this host's client running?

Runs on every KVM host (`cloudstack-storpool heartbeat run`, systemd unit
`cloudstack-storpool-heartbeat.service`). Each round it reads ServicesList, finds this host's
client (`SP_OURID`) and records the outcome in a small JSON status file that the agent can
expose. After `max_failures` failed rounds in a row it takes the configured action.

The Java plugin's only action was a hard reboot, and users were fenced by it when the StorPool
API (not their storage) was unreachable. So the outcomes are three, not two:

* ok      - the API answered and lists this client as running;
* fail    - the API answered and says the client is down, or does not list it at all;
* unknown - the API could not be reached, or answered with an error.

`log`/`alert` fire after `max_failures` rounds that were not ok (an operator wants to hear about
an unreachable API too). `reboot` fires only after `max_failures` consecutive *fail* rounds:
an unknown round resets that count, because rebooting a host whose storage may be fine, on
the strength of silence, is the false fencing users complained about.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Any

from cloudstack_storpool import logs
from cloudstack_storpool.agent.hostconfig import DEFAULT_HEARTBEAT_STATUS
from cloudstack_storpool.errors import ValidationError
from cloudstack_storpool.heartbeat.answers import ServicesSource, read_active_requests, read_services
from cloudstack_storpool.heartbeat.policy import Verdict, first_look
from cloudstack_storpool.names import MAX_CLIENT_ID, is_client_id
from cloudstack_storpool.typedjson import parse

log = logging.getLogger(__name__)

# The agent serves this file (GET /v1/heartbeat): one default path, the host config's.
DEFAULT_STATUS_FILE = DEFAULT_HEARTBEAT_STATUS
SYSRQ_TRIGGER = "/proc/sysrq-trigger"


class Action(StrEnum):
    """`storpool.heartbeat.action`."""

    NONE = "none"
    LOG = "log"
    ALERT = "alert"
    REBOOT = "reboot"


class Result(StrEnum):
    OK = "ok"
    FAIL = "fail"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class LoopConfig:
    """Plain values (from settings or flags) so the loop needs no CloudStack to run."""

    client_id: int
    interval: float = 10.0
    """`storpool.heartbeat.interval`, seconds between the starts of two rounds."""
    max_failures: int = 3
    """`storpool.heartbeat.max.failures`."""
    action: Action = Action.LOG
    """`storpool.heartbeat.action`."""
    status_file: Path = Path(DEFAULT_STATUS_FILE)

    def __post_init__(self) -> None:
        if not math.isfinite(self.interval) or self.interval <= 0:
            raise ValueError("interval must be a finite number > 0")
        if self.max_failures < 1:
            raise ValueError("max_failures must be at least 1")
        if not is_client_id(self.client_id):
            raise ValueError(f"client id must be 1..{MAX_CLIENT_ID}, got {self.client_id}")


@dataclass(frozen=True)
class Probe:
    result: Result
    reason: str


@dataclass
class LoopState:
    """What the status file shows; kept in memory between rounds."""

    result: Result = Result.UNKNOWN
    reason: str = "not checked yet"
    time: float = 0.0
    consecutive_failures: int = 0
    """Rounds in a row that were not ok (fail or unknown)."""
    consecutive_down: int = 0
    """Rounds in a row in which the API itself said the client is down or absent."""
    rounds: int = 0
    last_action: str = ""
    acted: bool = False
    """The action already ran for the current failure streak (one action per streak)."""
    idle: bool | None = None
    """After a fail round: True when StorPool shows no I/O in flight for this client, False when it
    does, None when it could not tell (or the round was not a fail). `kvmspheartbeat.sh` reboots
    only on a fresh fail that is idle."""

    def as_dict(self, config: LoopConfig) -> dict[str, Any]:
        return {
            "time": self.time,
            "time_iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.time)) if self.time else "",
            "result": self.result.value,
            "reason": self.reason,
            "consecutive_failures": self.consecutive_failures,
            "consecutive_down": self.consecutive_down,
            "client_id": config.client_id,
            "interval": config.interval,
            "max_failures": config.max_failures,
            "action": config.action.value,
            "last_action": self.last_action,
            "idle": self.idle,
        }


def write_status(path: Path, data: dict[str, Any]) -> None:
    """Write the status file so a reader never sees half of it: temp file, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, sort_keys=True, allow_nan=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


# The status file's fields and their JSON types. A reader believes a field only when it has its
# type: the drop-in reboots on `time`, `interval` and the counts, and Python's json module alone
# gives NaN, Infinity, true (an int to Python) or a string for any of them.
STATUS_FIELDS: dict[str, Any] = {
    "time": float,
    "interval": float,
    "consecutive_failures": int,
    "consecutive_down": int,
    "max_failures": int,
    "client_id": int,
    "result": str,
    "reason": str,
    "idle": bool | None,
}


def parse_status(data: Any, *, required: Sequence[str] = ()) -> dict[str, Any]:
    """The status as a reader may believe it: every field of STATUS_FIELDS that is present has
    its type (numbers finite, integers 64-bit, booleans not counted as numbers), and `required`
    ones are present. ValidationError names the first field that is not so."""
    if not isinstance(data, dict):
        raise ValidationError("status", f"must be a JSON object, not {type(data).__name__}")
    for name in required:
        if name not in data:
            raise ValidationError(name, "is missing")
    return {**data, **{name: parse(tp, data[name], name) for name, tp in STATUS_FIELDS.items() if name in data}}


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not a JSON number")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is not a finite number")
    return number


def loads_strict(text: str) -> Any:
    """JSON as the standard defines it: Python's json module also takes NaN, Infinity and
    numbers that overflow to infinity, which no writer of this project produces."""
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def read_status(path: Path) -> dict[str, Any] | None:
    """The last status written, or None when the loop has not run yet. A file that is not the
    loop's (not JSON, not an object, a field of the wrong type) raises ValueError saying why."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return parse_status(loads_strict(text))


def sysrq_reboot(enabled: bool, trigger: str = SYSRQ_TRIGGER) -> Callable[[str], None]:
    """The real reboot: `b` to sysrq-trigger (immediate, no sync, like the Java plugin).

    Only armed when `enabled` (the `--allow-reboot` flag): a configuration value alone must never
    be able to reboot a machine, e.g. a developer running the loop against the emulator.
    """

    def reboot(reason: str) -> None:
        if not enabled:
            log.critical("heartbeat: reboot requested (%s) but not enabled (--allow-reboot); not rebooting", reason)
            return
        log.critical("heartbeat: rebooting this host through %s: %s", trigger, reason)
        for handler in logging.getLogger().handlers:
            handler.flush()
        with open(trigger, "w") as fh:
            fh.write("b")

    return reboot


def log_alert(subject: str) -> None:
    """The alert sink when no CloudStack endpoint is configured."""
    log.error("heartbeat ALERT: %s", subject)


class HostLoop:
    """One host's heartbeat. `run()` until `stop` is set; `round()` is one check, for tests."""

    def __init__(
        self,
        conn: ServicesSource,
        config: LoopConfig,
        *,
        alert: Callable[[str], None] = log_alert,
        reboot: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.conn = conn
        self.config = config
        self.state = LoopState()
        self.stop = threading.Event()
        self._alert = alert
        self._reboot = reboot if reboot is not None else sysrq_reboot(False)
        self._clock = clock

    def probe(self) -> Probe:
        """One look at ServicesList; no retries inside: the next round is the retry."""
        services = read_services(self.conn)
        if isinstance(services, str):
            return Probe(Result.UNKNOWN, services)
        view = services.clients.view(self.config.client_id)
        # The same first look as the management-side check: only a client the cluster (with
        # quorum) lists as down, or does not list among others, is a failure; anything odd is
        # "cannot tell", which never counts toward a reboot.
        decision = first_look(services.cluster_status, view)
        if decision is None:
            if view.status is None:
                return Probe(Result.FAIL, f"client {self.config.client_id} is not listed by the cluster")
            return Probe(Result.FAIL, f"client {self.config.client_id} is {view.status}")
        if decision.verdict is Verdict.ALIVE:
            return Probe(Result.OK, decision.reason)
        return Probe(Result.UNKNOWN, decision.reason)

    def idle(self) -> bool | None:
        """One look at the client's active requests, read as the management-side check reads
        them: "not running, cannot list" from the API is idle; an API that cannot be asked, or
        an answer that cannot be read, says nothing (None)."""
        if getattr(self.conn, "client_active_requests", None) is None:
            return None
        seen = read_active_requests(self.conn, self.config.client_id)  # type: ignore[arg-type]
        return None if seen.volumes is None else not seen.volumes

    def _safe_probe(self) -> Probe:
        """A probe that cannot stop the round: a bug in it is a round that cannot tell, and the
        status file still gets this round's time and reason instead of keeping an old `ok`."""
        try:
            return self.probe()
        except Exception as exc:
            log.exception("heartbeat: probe failed")
            return Probe(Result.UNKNOWN, f"heartbeat probe failed: {type(exc).__name__}: {exc}")

    def round(self) -> LoopState:
        """Probe, update the counters, maybe act, then write the status file."""
        with logs.context(f"heartbeat-{self.state.rounds + 1}"):
            return self._round()

    def _round(self) -> LoopState:
        probe = self._safe_probe()
        st = self.state
        st.rounds += 1
        st.time = self._clock()
        st.result, st.reason = probe.result, probe.reason
        st.idle = self.idle() if probe.result is Result.FAIL else None
        if probe.result is Result.OK:
            if st.consecutive_failures >= self.config.max_failures:
                log.warning("heartbeat: recovered after %d failed rounds", st.consecutive_failures)
            st.consecutive_failures = st.consecutive_down = 0
            st.acted = False
        else:
            st.consecutive_failures += 1
            st.consecutive_down = st.consecutive_down + 1 if probe.result is Result.FAIL else 0
            log.info("heartbeat: %s (%s), %d in a row", probe.result.value, probe.reason, st.consecutive_failures)
            self._maybe_act()
        try:
            write_status(self.config.status_file, st.as_dict(self.config))
        except OSError as exc:
            log.error("heartbeat: cannot write %s: %s", self.config.status_file, exc)
        return st

    def _maybe_act(self) -> None:
        st, cfg = self.state, self.config
        if st.acted or cfg.action is Action.NONE:
            return
        subject = (f"StorPool heartbeat of client {cfg.client_id} failed {st.consecutive_failures} times "
                   f"in a row: {st.reason}")
        if cfg.action is Action.REBOOT:
            if st.consecutive_down < cfg.max_failures:
                if st.consecutive_failures >= cfg.max_failures and st.result is Result.UNKNOWN:
                    log.warning("heartbeat: %s; not rebooting: the StorPool API did not say the client is down",
                                subject)
                return
            st.acted, st.last_action = True, "reboot"
            self._safe_alert(subject + "; rebooting")
            self._reboot(subject)
            return
        if st.consecutive_failures < cfg.max_failures:
            return
        st.acted = True
        if cfg.action is Action.LOG:
            st.last_action = "log"
            log.error("heartbeat: %s", subject)
        elif cfg.action is Action.ALERT:
            st.last_action = "alert"
            self._safe_alert(subject)

    def _safe_alert(self, subject: str) -> None:
        """An alert that cannot be sent must not stop the loop (or a reboot that follows it)."""
        try:
            self._alert(subject)
        except Exception:
            log.exception("heartbeat: sending the alert failed")

    def run(self, max_rounds: int | None = None) -> LoopState:
        """Rounds every `interval` seconds (start to start) until `stop` is set."""
        log.info("heartbeat: client %d, every %.3gs, action %s after %d failures", self.config.client_id,
                 self.config.interval, self.config.action.value, self.config.max_failures)
        next_at = time.monotonic()
        while not self.stop.is_set():
            try:
                self.round()
            except Exception:
                # A bug in one round must not end the heartbeat of the host.
                log.exception("heartbeat: round failed")
            if max_rounds is not None and self.state.rounds >= max_rounds:
                break
            next_at += self.config.interval
            delay = next_at - time.monotonic()
            if delay < 0:  # a slow round: start the next one now, do not try to catch up
                next_at, delay = time.monotonic(), 0.0
            self.stop.wait(delay)
        log.info("heartbeat: stopped after %d rounds", self.state.rounds)
        return self.state

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT end the loop after the current round (systemd stop, Ctrl-C)."""

        def handler(signum: int, _frame: FrameType | None) -> None:
            log.info("heartbeat: signal %d, stopping", signum)
            self.stop.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
