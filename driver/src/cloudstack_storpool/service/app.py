"""The driver service's HTTP server: authentication, routing, error mapping, jobs.

Same plumbing as the agent (httpjson.py: bounded workers, read deadlines, a connection cap, one
write per reply), JSON in and out, a bearer token compared in constant time and checked before
the body is read, so an unauthenticated client cannot make the service parse anything. The
routes are the operation table (operations.py) plus:

  GET /openapi.json        the OpenAPI document of this very table
  GET /v1/health           version and pools (a cheap liveness probe for the adapter)
  GET /v1/jobs             jobs known to this process
  GET /v1/jobs/{job_id}    one job: state, result or error
  GET /metrics             Prometheus metrics (metrics.py), behind the same token

Errors are `{"error": {"code", "message", "field"?}}` with the status of `error_response`.
Messages of unexpected exceptions are never sent (they may quote anything); they are logged
with a reference the client gets instead. Every message sent or logged passes through the
redactor, which masks the tokens and secrets this process knows.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import secrets
import threading
import traceback
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cloudstack_storpool import logs, metrics
from cloudstack_storpool.driver.context import DriverContext
from cloudstack_storpool.driver.recovery import ExpiryTracker
from cloudstack_storpool.driver.stats import StatsCache
from cloudstack_storpool.errors import (
    AgentError,
    CloudStackConfigError,
    CloudStackError,
    CloudStackNoAnswer,
    Conflict,
    NotFound,
    SpBusy,
    SpExists,
    SpNotFound,
    SpTransient,
    StorPoolError,
    ValidationError,
)
from cloudstack_storpool.httpjson import JsonHandler, Routes, TokenServer, serve_in_thread
from cloudstack_storpool.jobs import JOB_ID_PATTERN
from cloudstack_storpool.logs import Redactor
from cloudstack_storpool.poolconfig import load_pools
from cloudstack_storpool.service import counted
from cloudstack_storpool.service.jobs import Job, JobManager
from cloudstack_storpool.service.periodic import PeriodicTask, service_tasks
from cloudstack_storpool.service.spec import IDEMPOTENCY_FIELD, Operation, OperationTable
from cloudstack_storpool.typedjson import to_json
from cloudstack_storpool.version import __version__

__all__ = ["Redactor", "ServiceServer", "error_response", "make_server", "serve_in_thread"]

log = logging.getLogger(__name__)

_REQUEST_PREFIX = secrets.token_hex(3)
_REQUEST_COUNT = itertools.count(1)


def _request_id() -> str:
    """The id on the log lines of one synchronous request: a random prefix per process and a
    count (unique across the service's processes without a random draw per request)."""
    return f"req-{_REQUEST_PREFIX}{next(_REQUEST_COUNT):06x}"


_JOB_ID = re.compile(JOB_ID_PATTERN)


def error_response(exc: BaseException) -> tuple[int, str, str | None]:
    """(HTTP status, code, field) for an exception raised by an operation.

    4xx: the request can be fixed (400), names a missing object (404), or meets a state that
    forbids it (409). 5xx: something upstream failed, 502 when it answered with an error
    (StorPool, CloudStack, an agent) or CloudStack is not configured, and 503 when it may work on
    retry (StorPool transient or unreachable, CloudStack unreachable or its async job still
    running). Anything else is a bug here: 500.
    """
    if isinstance(exc, ValidationError):
        return 400, exc.code, exc.field
    if isinstance(exc, (NotFound, SpNotFound)):
        return 404, exc.code, None
    if isinstance(exc, (Conflict, SpExists, SpBusy)):
        fld = getattr(exc, "field", None)
        return 409, exc.code, fld if isinstance(fld, str) else None
    if isinstance(exc, (SpTransient, CloudStackNoAnswer)):
        return 503, exc.code, None
    if isinstance(exc, (AgentError, CloudStackError, CloudStackConfigError, StorPoolError)):
        return 502, exc.code, None
    return 500, "internal", None


class ServiceServer(TokenServer):
    role = "service"
    workers = 32
    """Synchronous operations run on the worker that answers them, so more than the agent's."""

    def __init__(self, address: tuple[str, int], token: str, ctx: DriverContext, table: OperationTable, *,
                 pools_file: str | Path | None = None, max_jobs: int = 8, job_retention: float = 3600.0,
                 secrets: Iterable[str | None] = (), periodic_gc: bool = False, workers: int | None = None) -> None:
        super().__init__(address, token, _Handler)
        if workers is not None:
            if workers < 1:
                raise ValidationError("workers", "must be at least 1")
            self.workers = workers
        self.ctx = ctx
        self.table = table
        self.pools_file = Path(pools_file) if pools_file is not None else None
        self.config: dict[str, Any] = {"pools_file": self.pools_file}
        self._pools_stamp = self._stamp()
        pool_tokens = [p.token.reveal() for p in ctx.pools.pools]
        self.redact = Redactor([token, *pool_tokens, *secrets])
        logs.register_secret(token, *pool_tokens, *secrets)
        self.jobs = JobManager(self.error_json, max_running=max_jobs, retention=job_retention)
        self._openapi: bytes | None = None
        self._openapi_lock = threading.Lock()
        # The periodic tasks (GC, the two stats collections, the delay-delete sync) fill what
        # the stats and deleted-volume operations serve; `periodic_gc` runs them all.
        self.stats = StatsCache()
        self.expiry = ExpiryTracker()
        self.config["cache"] = self.stats
        self.config["tracker"] = self.expiry
        counted.register()
        self.periodic: list[PeriodicTask] = (
            [t.start() for t in service_tasks(ctx, self.stats, self.expiry, metrics.record_result)] if periodic_gc else []
        )

    def _stamp(self) -> tuple[int, int] | None:
        if self.pools_file is None:
            return None
        try:
            st = self.pools_file.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def refresh_pools(self) -> None:
        """Reload the pools file when it changed: another service process (or `pools register`)
        may have added or removed a pool. One stat per request; a bad file keeps the old pools."""
        stamp = self._stamp()
        if stamp is None or stamp == self._pools_stamp:
            return
        try:
            self.ctx.pools = load_pools(self.pools_file)  # type: ignore[arg-type]
        except ValidationError as exc:
            log.error("pools file changed but cannot be loaded, keeping the previous pools: %s", self.redact(str(exc)))
        else:
            self.redact.add(p.token.reveal() for p in self.ctx.pools.pools)
            logs.register_secret(*(p.token.reveal() for p in self.ctx.pools.pools))
        self._pools_stamp = stamp

    def openapi(self) -> bytes:
        with self._openapi_lock:
            if self._openapi is None:
                from cloudstack_storpool.service.openapi import document, dumps

                self._openapi = dumps(document(self.table)).encode()
            return self._openapi

    def error_json(self, exc: BaseException, what: str) -> dict[str, Any]:
        """The wire error for `exc`, logged on the way (unexpected ones with their traceback)."""
        status, code, fld = error_response(exc)
        if status == 500:
            ref = uuid.uuid4().hex[:12]
            # The traceback is formatted here rather than by logging, so it is redacted too.
            detail = "".join(traceback.format_exception(exc)).rstrip()
            log.error("%s failed (ref %s):\n%s", what, ref, self.redact(detail))
            message = f"internal error (ref {ref}; details are in the service log)"
        else:
            message = self.redact(str(exc))
            log.log(logging.WARNING if status >= 500 else logging.INFO, "%s: %s %s", what, status, message)
        out: dict[str, Any] = {"code": code, "message": message}
        if fld is not None:
            out["field"] = self.redact(fld)
        out["status"] = status
        return out

    def close(self, job_timeout: float = 30.0) -> None:
        """Stop accepting, let running jobs finish (up to `job_timeout`), release the socket."""
        for task in self.periodic:
            task.close()
        self.shutdown()
        if not self.jobs.wait_all(job_timeout):
            log.warning("stopping with jobs still running; their callers must retry elsewhere")
        self.server_close()


class _Handler(JsonHandler):
    server: ServiceServer

    def log_message(self, format: str, *args: Any) -> None:
        # The request line and status only: headers carry the token and are never logged.
        log.info("%s %s", self.address_string(), self.server.redact(format % args))

    def _fail(self, exc: BaseException, what: str) -> None:
        err = self.server.error_json(exc, what)
        status = err.pop("status")
        self._error(status, err["code"], err["message"], err.get("field"))

    def _body(self) -> Any:
        raw = self._read_body()
        if raw is None or not raw.strip():
            return None
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            raise ValidationError("body", "not valid JSON") from None

    def handle(self) -> None:
        """Route an authenticated request: the service's own routes (`ROUTES`), then the
        operation table."""
        method = self.command
        try:
            parts = urlsplit(self.path)
            path, query = parts.path, parse_qs(parts.query, keep_blank_values=True, max_num_fields=100)
        except ValueError:
            self._error(400, "invalid", "malformed request target", "path")
            return
        own, groups, own_allowed = ROUTES.resolve(method, path)
        if own is not None:
            own(self, *groups)
            return
        if own_allowed:
            self._error(405, "method-not-allowed", f"{method} is not allowed here",
                        headers={"Allow": ", ".join(own_allowed)})
            return
        op, path_args, allowed = self.server.table.resolve(method, path)
        if op is None:
            if allowed:
                self._error(405, "method-not-allowed", f"{method} is not allowed here",
                            headers={"Allow": ", ".join(allowed)})
            else:
                self._error(404, "not-found", "no such route")
            return
        try:
            body = self._body() if op.accepts_body else None
            args = op.parse(path_args, query, body)
        except ValidationError as exc:
            self._fail(exc, f"{op.name} request")
            return
        self.server.refresh_pools()
        if op.job:
            self._start_job(op, args, body)
            return
        try:
            with logs.context(_request_id(), op.subject_of(args)), \
                    metrics.operation("service", op.name):
                result = op.call(self.server.ctx, args, self.server.config)
                metrics.record_result(op.name, result)
                out = to_json(result) if op.result_type is not None else None
        except Exception as exc:
            self._fail(exc, op.name)
            return
        if op.result_type is None:
            self.send_bytes(204, b"")
        else:
            self._send(200, out)

    def _start_job(self, op: Operation, args: dict[str, Any], body: Any) -> None:
        key = self.headers.get("Idempotency-Key")
        if isinstance(body, dict) and body.get(IDEMPOTENCY_FIELD) is not None:
            key = body[IDEMPOTENCY_FIELD]
        ctx, config = self.server.ctx, self.server.config

        def run(job: Job) -> Any:
            with metrics.operation("service", op.name):
                result = op.call(ctx.with_progress(job.set_progress), args, config)
                metrics.record_result(op.name, result)
                return to_json(result) if op.result_type is not None else None

        try:
            job, created = self.server.jobs.submit(op.name, to_json(args), key, run, op.subject_of(args))
        except Exception as exc:
            self._fail(exc, f"{op.name} job")
            return
        self._send(202 if created else 200, job.to_json(), {"Location": f"/v1/jobs/{job.id}"})


ROUTES: Routes[_Handler] = Routes()
"""The service's own routes (the driver operations come from the operation table)."""


@ROUTES.add("GET", "/metrics")
def _metrics(h: _Handler) -> None:
    metrics.send(h)


@ROUTES.add("GET", "/openapi.json")
def _openapi(h: _Handler) -> None:
    h.send_bytes(200, h.server.openapi())


@ROUTES.add("GET", "/v1/health")
def _health(h: _Handler) -> None:
    pools = [{"uuid": p.uuid, "name": p.name, "endpoint": p.endpoint, "template": p.template}
             for p in h.server.ctx.pools.pools]
    h._send(200, {"status": "ok", "version": __version__, "pools": pools})


@ROUTES.add("GET", "/v1/jobs")
def _jobs(h: _Handler) -> None:
    h._send(200, {"jobs": [j.to_json() for j in h.server.jobs.list()]})


@ROUTES.add("GET", "/v1/jobs/([^/]+)")
def _job(h: _Handler, job_id: str) -> None:
    if not _JOB_ID.match(job_id):
        h._error(400, "invalid", "a job id is 32 lower-case hex digits", "job_id")
        return
    job = h.server.jobs.get(job_id)
    if job is None:
        h._error(404, "not-found", "no such job on this service process (job ids are per process)")
    else:
        h._send(200, job.to_json())


def make_server(ctx: DriverContext, token: str, host: str = "127.0.0.1", port: int = 0, *,
                table: OperationTable | None = None, pools_file: str | Path | None = None, max_jobs: int = 8,
                secrets: Iterable[str | None] = (), periodic_gc: bool = False,
                workers: int | None = None) -> ServiceServer:
    """A service over an already-built driver context (tests, the local stack, the CLI).

    Not started: call `serve_forever()` (or `serve_in_thread`)."""
    if table is None:
        from cloudstack_storpool.service.operations import TABLE

        table = TABLE
    return ServiceServer((host, port), token, ctx, table, pools_file=pools_file, max_jobs=max_jobs, secrets=secrets,
                         periodic_gc=periodic_gc, workers=workers)
