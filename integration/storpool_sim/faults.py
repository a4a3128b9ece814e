"""Fault injection: the failures a real cluster produces that a driver must survive.

Rules are keyed by query name (`VolumeCreate`, `ServicesList`, ...; `*` matches every query) and
consulted by the wire for each authenticated request, so the same rule works whether a test
drives the emulator in-process (`handle.faults`) or over HTTP (`POST /_sim/faults`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from integration.storpool_sim.model import Model, SpApiError


@dataclass
class _FailRule:
    remaining: int
    name: str
    descr: str
    transient: bool
    status: int | None


class Hold:
    """A one-shot gate on one query: the next call of it stops before it is handled, sets
    `arrived`, and goes on once `release()` is called. A test makes a race happen at that exact
    point (something else changes the cluster while that call waits), with events, not sleeps."""

    TIMEOUT = 60.0
    """A held call never waits longer than this: a test that forgets to release fails, it does
    not hang."""

    def __init__(self, query: str) -> None:
        self.query = query
        self.arrived = threading.Event()
        self._released = threading.Event()

    def release(self) -> None:
        self._released.set()

    def pass_through(self) -> None:
        """Called by the held request: announce it, then wait for the release."""
        self.arrived.set()
        self._released.wait(self.TIMEOUT)


class FaultInjector:
    """Thread-safe set of pending faults; every `fail_next`/`drop_*` rule is consumed per call."""

    def __init__(self, model: Model) -> None:
        self._model = model
        self._lock = threading.Lock()
        self._fail: dict[str, list[_FailRule]] = {}
        self._latency: dict[str, float] = {}
        self._drop_after: dict[str, int] = {}
        self._drop_before: dict[str, int] = {}
        self._holds: dict[str, list[Hold]] = {}
        self._gates: list[Hold] = []
        """Every gate made since the last reset, waiting or not: reset opens them all."""

    def fail_next(
        self,
        query: str,
        n: int = 1,
        *,
        error: str = "busy",
        descr: str | None = None,
        transient: bool = False,
        status: int | None = None,
    ) -> None:
        """The next `n` calls of `query` answer with this error, before anything is applied."""
        rule = _FailRule(n, error, descr or f"injected {error} for {query}", transient, status)
        with self._lock:
            self._fail.setdefault(query, []).append(rule)

    def add_latency(self, query: str, seconds: float) -> None:
        """Every call of `query` waits this long before it is handled (0 removes it)."""
        with self._lock:
            if seconds <= 0:
                self._latency.pop(query, None)
            else:
                self._latency[query] = seconds

    def drop_after_apply(self, query: str, n: int = 1) -> None:
        """The lost-response case: the next `n` calls are applied, then the socket closes unanswered."""
        with self._lock:
            self._drop_after[query] = self._drop_after.get(query, 0) + n

    def drop_before_apply(self, query: str, n: int = 1) -> None:
        """The next `n` calls are dropped unanswered without being applied (a crash before commit)."""
        with self._lock:
            self._drop_before[query] = self._drop_before.get(query, 0) + n

    def hold(self, query: str) -> Hold:
        """The next call of `query` waits, before it is handled, until the returned gate is
        released (in-process only: the caller needs the gate's events)."""
        gate = Hold(query)
        with self._lock:
            self._holds.setdefault(query, []).append(gate)
            self._gates.append(gate)
        return gate

    def set_client_status(self, client: int, status: str) -> None:
        """Mark a client `running` or `down` in ServicesList / ClientsConfigDump."""
        self._model.set_client_status(client, status)

    def client_down(self, client: int) -> None:
        self.set_client_status(client, "down")

    def client_up(self, client: int) -> None:
        self.set_client_status(client, "running")

    def set_active_requests(self, client: int, requests: list[dict[str, Any]]) -> None:
        """What ClientActiveRequests/<client> reports (validated as the bindings' ActiveRequestDesc)."""
        self._model.set_active_requests(client, requests)

    def reset(self) -> None:
        """Forget every rule, bring all clients back up and clear their active requests."""
        with self._lock:
            self._fail.clear()
            self._latency.clear()
            self._drop_after.clear()
            self._drop_before.clear()
            holds, self._gates = self._gates, []
            self._holds.clear()
        for g in holds:
            g.release()
        for c in list(self._model.clients):
            self._model.set_client_status(c, "running")
            self._model.set_active_requests(c, [])

    # ---- consulted by the wire ---------------------------------------------------------------
    def latency(self, query: str) -> float:
        with self._lock:
            return self._latency.get(query, 0.0) + self._latency.get("*", 0.0)

    def take_hold(self, query: str) -> Hold | None:
        with self._lock:
            gates = self._holds.get(query)
            return gates.pop(0) if gates else None

    def take_error(self, query: str) -> SpApiError | None:
        with self._lock:
            for key in (query, "*"):
                rules = self._fail.get(key)
                if rules:
                    rule = rules[0]
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        rules.pop(0)
                    return SpApiError(rule.name, rule.descr, transient=rule.transient, status=rule.status)
        return None

    def _take(self, table: dict[str, int], query: str) -> bool:
        with self._lock:
            for key in (query, "*"):
                if table.get(key, 0) > 0:
                    table[key] -= 1
                    return True
        return False

    def take_drop_before(self, query: str) -> bool:
        return self._take(self._drop_before, query)

    def take_drop_after(self, query: str) -> bool:
        return self._take(self._drop_after, query)

    def apply_json(self, req: dict[str, Any]) -> None:
        """The admin endpoint's body: `{"op": ..., ...}` mirroring the method names above."""
        op = req.get("op")
        if op == "failNext":
            self.fail_next(str(req["query"]), int(req.get("n", 1)), error=str(req.get("error", "busy")),
                           descr=req.get("descr"), transient=bool(req.get("transient", False)),
                           status=req.get("status"))
        elif op == "latency":
            self.add_latency(str(req["query"]), float(req["seconds"]))
        elif op == "dropAfterApply":
            self.drop_after_apply(str(req["query"]), int(req.get("n", 1)))
        elif op == "dropBeforeApply":
            self.drop_before_apply(str(req["query"]), int(req.get("n", 1)))
        elif op == "clientStatus":
            self.set_client_status(int(req["client"]), str(req["status"]))
        elif op == "activeRequests":
            self.set_active_requests(int(req["client"]), list(req["requests"]))
        elif op == "reset":
            self.reset()
        else:
            raise ValueError(f"unknown fault op {op!r}")
