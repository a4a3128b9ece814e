"""Prometheus metrics of the driver service and the KVM agents (`GET /metrics`).

Built on `prometheus_client` (the exposition format is its business, not ours). One registry per
process: the service and an agent are separate processes in production, so each scrape shows one
side; the `side` label still tells them apart where one process runs both (the local stack).

The endpoint sits behind the same bearer token as the rest of each API (Prometheus:
`authorization: {type: Bearer, credentials_file: ...}`); an unauthenticated scrape is 401 and
reads nothing. The metric table with example alerts is in docs/operations.md ("Monitoring").

The hooks are few and at the funnels: every StorPool query passes `_CountingApi` (spconn.py),
every CloudStack command `CloudStackClient._call`, every service operation the service's
dispatcher, every agent command the agent's job runner, every periodic task its result callback.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from cloudstack_storpool.errors import Conflict, NotFound, SpExists, SpNotFound, ValidationError

if TYPE_CHECKING:
    from cloudstack_storpool.httpjson import JsonHandler

REGISTRY = CollectorRegistry(auto_describe=True)

_CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_OP_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)

OPERATIONS = Counter("cssp_operations_total", "Operations run, by side (service, agent), name and outcome "
                     "(ok, refused: the request or the state forbids it, failed)",
                     ["side", "operation", "outcome"], registry=REGISTRY)
OPERATION_SECONDS = Histogram("cssp_operation_duration_seconds", "Duration of operations",
                              ["side", "operation"], buckets=_OP_BUCKETS, registry=REGISTRY)
IN_FLIGHT = Gauge("cssp_operations_in_flight", "Operations running now", ["side", "operation"], registry=REGISTRY)
STORPOOL_CALLS = Counter("cssp_storpool_calls_total", "StorPool API queries sent, by query and outcome",
                         ["query", "outcome"], registry=REGISTRY)
STORPOOL_SECONDS = Histogram("cssp_storpool_call_duration_seconds", "StorPool API query latency", ["query"],
                             buckets=_CALL_BUCKETS, registry=REGISTRY)
CLOUDSTACK_CALLS = Counter("cssp_cloudstack_calls_total", "CloudStack API commands sent, by command and outcome",
                           ["command", "outcome"], registry=REGISTRY)
CLOUDSTACK_SECONDS = Histogram("cssp_cloudstack_call_duration_seconds", "CloudStack API command latency "
                               "(async commands include the wait for their job)", ["command"],
                               buckets=_CALL_BUCKETS, registry=REGISTRY)
COPIES_IN_FLIGHT = Gauge("cssp_agent_copies_in_flight", "qemu-img copies running on this host", registry=REGISTRY)
COPIED_BYTES = Counter("cssp_agent_copied_bytes_total", "Bytes (image virtual size) of the copies this host "
                       "completed", registry=REGISTRY)
HEARTBEAT_VERDICTS = Counter("cssp_heartbeat_verdicts_total", "Storage heartbeat verdicts given, by host and "
                             "verdict (alive, dead, unknown)", ["host", "verdict"], registry=REGISTRY)
HEARTBEAT_VERDICT = Gauge("cssp_heartbeat_verdict", "1 for a host's latest verdict, 0 for the others",
                          ["host", "verdict"], registry=REGISTRY)
PERIODIC_RUNS = Counter("cssp_periodic_runs_total", "Runs of the service's periodic tasks (gc, capacity, "
                        "volumes, delay-delete) by outcome", ["task", "outcome"], registry=REGISTRY)
GC_DELETED = Counter("cssp_gc_deleted_total", "Objects garbage collection deleted", registry=REGISTRY)
GC_ERRORS = Counter("cssp_gc_errors_total", "Objects garbage collection failed to delete", registry=REGISTRY)
DELAY_DELETE_EXPIRED = Counter("cssp_delay_delete_expired_total", "Deleted volumes whose backup expired",
                               registry=REGISTRY)
CERT_NOT_BEFORE = Gauge("cssp_agent_certificate_not_before_timestamp_seconds", "Start of the validity period "
                        "(notBefore, Unix time) of the TLS certificate the agent serves", ["file"], registry=REGISTRY)
CERT_NOT_AFTER = Gauge("cssp_agent_certificate_expiry_timestamp_seconds", "End of the validity period (notAfter, "
                       "Unix time) of the TLS certificate the agent serves", ["file"], registry=REGISTRY)
CERT_VALID = Gauge("cssp_agent_certificate_valid", "1 while the agent's TLS certificate is within its validity "
                   "period (judged at each scrape), 0 when it is expired or not yet valid", ["file"],
                   registry=REGISTRY)
POOL_BYTES = Gauge("cssp_pool_bytes", "Pool capacity from the last collection, by kind (total, used, free, "
                   "provisioned, stored)", ["pool", "kind"], registry=REGISTRY)

VERDICTS = ("alive", "dead", "unknown")


def outcome(exc: BaseException | None) -> str:
    """ok; refused (bad input, missing object, conflicting state: the caller can fix it); failed."""
    if exc is None:
        return "ok"
    if isinstance(exc, ValidationError | NotFound | Conflict | SpNotFound | SpExists):
        return "refused"
    if getattr(exc, "code", None) == "invalid":  # e.g. CloudStack's 431
        return "refused"
    return "failed"


_children: dict[tuple[int, tuple[str, ...]], Any] = {}


def _child(metric: Any, *values: str) -> Any:
    """`metric.labels(*values)`, looked up once: the library checks and locks on every call,
    which costs more than the increment on the service's per-request path. (Label values of
    these metrics are bounded: operation and query names, outcomes.)"""
    key = (id(metric), values)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*values)
    return child


class operation:  # lower case: used as `with metrics.operation(...)`, like a function
    """Count, time and track one operation of the service or of an agent. A class rather than
    a generator context manager: it wraps every request, and a generator's frame and
    contextlib's wrapper cost several times the counting itself."""

    __slots__ = ("_gauge", "_name", "_side", "_start")

    def __init__(self, side: str, name: str) -> None:
        self._side, self._name = side, name
        self._gauge = _child(IN_FLIGHT, side, name)

    def __enter__(self) -> None:
        self._gauge.inc()
        self._start = time.monotonic()

    def __exit__(self, _type: type[BaseException] | None, exc: BaseException | None, _tb: Any) -> None:
        self._gauge.dec()
        _child(OPERATION_SECONDS, self._side, self._name).observe(time.monotonic() - self._start)
        _child(OPERATIONS, self._side, self._name, outcome(exc)).inc()


def storpool_call(query: str, seconds: float, result: str) -> None:
    _child(STORPOOL_CALLS, query, result).inc()
    _child(STORPOOL_SECONDS, query).observe(seconds)


def cloudstack_call(command: str, seconds: float, err: BaseException | None) -> None:
    _child(CLOUDSTACK_CALLS, command, outcome(err)).inc()
    _child(CLOUDSTACK_SECONDS, command).observe(seconds)


def heartbeat_verdict(host: str, verdict: str, *, count: bool = True) -> None:
    """A verdict about `host`; `count` False when a verdict is only being re-read (the agent reads
    its host loop's status file at each scrape)."""
    verdict = verdict if verdict in VERDICTS else "unknown"
    if count:
        HEARTBEAT_VERDICTS.labels(host, verdict).inc()
    for v in VERDICTS:
        HEARTBEAT_VERDICT.labels(host, v).set(1 if v == verdict else 0)


def agent_certificate(file: str, not_before: float, not_after: float) -> None:
    """The served certificate's validity period (Unix times); its validity is judged at each
    scrape, so a certificate that expires while the agent runs shows it."""
    CERT_NOT_BEFORE.labels(file).set(not_before)
    CERT_NOT_AFTER.labels(file).set(not_after)
    CERT_VALID.labels(file).set_function(lambda: 1.0 if not_before <= time.time() <= not_after else 0.0)


ResultRecorder = Callable[[Any], None]
_RESULT_RECORDERS: dict[type, ResultRecorder] = {}
PERIODIC_TASKS = ("gc", "capacity", "volumes", "delay-delete", "snapshot-exports")


def count_results(kind: type, recorder: ResultRecorder) -> None:
    """How a result of type `kind` (alone, or as the items of a list) feeds the metrics. The layer
    that knows the type registers it (the service, for the driver's reports): this module is used
    by the connection layers, which sit below the driver, so it imports nothing above them."""
    _RESULT_RECORDERS[kind] = recorder


def _recorder_for(value: Any) -> ResultRecorder | None:
    return next((_RESULT_RECORDERS[t] for t in type(value).__mro__ if t in _RESULT_RECORDERS), None)


def record_result(name: str, result: Any) -> None:
    """What a periodic task or an operation returned, in the metrics it feeds (by its type)."""
    if name in PERIODIC_TASKS:
        PERIODIC_RUNS.labels(name, "failed" if isinstance(result, BaseException) else "ok").inc()
    items = result if isinstance(result, list) else [result]
    recorder = _recorder_for(items[0]) if items else None
    if recorder is not None:
        for item in items:
            recorder(item)


def send(handler: JsonHandler) -> None:
    """Answer a (authenticated) GET /metrics with the registry in the text exposition format."""
    handler.send_bytes(200, generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
