"""The agent's HTTP JSON API (`cloudstack-storpool agent serve`).

Served over TLS (`tls.py`) except on loopback or behind `--insecure-http`. Every request, of
any method, must carry `Authorization: Bearer <token>`; the token is compared in constant time
and checked before the body is read, so an unauthenticated client cannot make the agent parse
anything. Other methods are 405, unknown paths 404, both in JSON. Routes:

  GET    /v1/facts          host facts (synchronous), with the served certificate's validity
  GET    /v1/heartbeat      the heartbeat loop's last status on this host (null before it ran)
  POST   /v1/jobs           {"command", "args", "idempotency_key"?} -> 202 job (200 if it existed)
  GET    /v1/jobs           all known jobs
  GET    /v1/jobs/<id>      state, progress, result, error
  DELETE /v1/jobs/<id>      cancel
"""

from __future__ import annotations

import json
import logging
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudstack_storpool import logs, metrics
from cloudstack_storpool.agent.commands import Context, FactsRequest, RunControl, facts
from cloudstack_storpool.agent.hostconfig import HostConfig
from cloudstack_storpool.agent.jobs import JobManager, error_json
from cloudstack_storpool.agent.tls import ServedCertificate
from cloudstack_storpool.errors import Conflict, ValidationError
from cloudstack_storpool.httpjson import JsonHandler, TokenServer, parse_listen, serve_in_thread
from cloudstack_storpool.jobs import JOB_ID_PATTERN
from cloudstack_storpool.typedjson import parse_object

__all__ = ["AgentServer", "heartbeat_status", "parse_listen", "serve_in_thread"]

log = logging.getLogger(__name__)

_JOB_PATH = re.compile(rf"^/v1/jobs/({JOB_ID_PATTERN.strip('^$')})$")


@dataclass(frozen=True)
class JobRequest:
    """The body of `POST /v1/jobs`, parsed by the project's one request parser; `args` is then
    parsed as the command's own request (`commands.parse`)."""

    command: str
    args: Any = None
    idempotency_key: str | None = None


def heartbeat_status(host: HostConfig) -> dict[str, Any] | None:
    """The heartbeat loop's last status on this host (None before its first round), so the
    management side can see a host's own view of its storage heartbeat over the agent link."""
    from cloudstack_storpool.heartbeat.hostloop import read_status

    try:
        return read_status(Path(host.heartbeat_status_file))
    except (OSError, ValueError) as exc:
        return {"result": "unknown", "reason": f"cannot read {host.heartbeat_status_file}: {exc}"}


def _verdict(status: dict[str, Any]) -> str:
    """The host loop's last result as a heartbeat verdict (ok: alive, fail: dead, else unknown)."""
    return {"ok": "alive", "fail": "dead"}.get(str(status.get("result")), "unknown")


class AgentServer(TokenServer):
    role = "agent"

    def __init__(self, address: tuple[str, int], token: str, context_factory: Callable[[], Context],
                 *, max_copies: int = 2, tls: ssl.SSLContext | None = None,
                 certificate: ServedCertificate | None = None) -> None:
        super().__init__(address, token, _Handler, tls=tls)
        self.context_factory = context_factory
        self.jobs = JobManager(context_factory, max_copies=max_copies)
        self.certificate = certificate
        """The certificate `tls` serves (None: plain HTTP, or not told): in the facts and metrics."""
        if certificate is not None:
            metrics.agent_certificate(certificate.file, certificate.not_before.timestamp(),
                                      certificate.not_after.timestamp())

    def shutdown_all(self) -> None:
        self.shutdown()
        self.jobs.cancel_all()
        self.server_close()


class _Handler(JsonHandler):
    server: AgentServer
    server_version = "cloudstack-storpool-agent"

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines only (never headers: they hold the token).
        log.info("%s %s", self.address_string(), format % args)

    def _body(self) -> Any:
        raw = self._read_body()
        if raw is None:
            raise ValidationError("body", "a JSON body with Content-Length is required")
        try:
            return json.loads(raw or b"null")
        except (ValueError, RecursionError) as exc:
            raise ValidationError("body", f"not valid JSON: {exc}") from exc

    def do_GET(self) -> None:
        if not self._auth():
            return
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            status = heartbeat_status(self.server.context_factory().host)
            if status is not None:
                metrics.heartbeat_verdict(str(status.get("client_id", "self")), _verdict(status), count=False)
            metrics.send(self)
            return
        if path == "/v1/facts":
            try:
                ctx = self.server.context_factory()
                cert = self.server.certificate
                answer = facts(ctx, FactsRequest(), RunControl())
                self._send(200, {**answer, "certificate": cert.to_json() if cert is not None else None})
            except Exception as exc:
                self._error(500, "internal", str(exc))
            return
        if path == "/v1/heartbeat":
            self._send(200, {"status": heartbeat_status(self.server.context_factory().host)})
            return
        if path == "/v1/jobs":
            self._send(200, {"jobs": [j.to_json() for j in self.server.jobs.list()]})
            return
        m = _JOB_PATH.match(path)
        job = self.server.jobs.get(m.group(1)) if m else None
        if job is None:
            self._error(404, "not-found", f"no such resource: {path}")
            return
        self._send(200, job.to_json())

    def do_POST(self) -> None:
        if not self._auth():
            return
        if self.path.split("?", 1)[0] != "/v1/jobs":
            self._error(404, "not-found", f"no such resource: {self.path}")
            return
        try:
            req: JobRequest = parse_object(JobRequest, self._body())
            key = req.idempotency_key if req.idempotency_key is not None else self.headers.get("Idempotency-Key")
            job, created = self.server.jobs.submit(
                req.command, req.args, key, subject=logs.incoming_header(self.headers.get(logs.SUBJECT_HEADER)),
                caller=logs.incoming_header(self.headers.get(logs.CALLER_HEADER)))
        except ValidationError as exc:
            self._error(400, exc.code, str(exc), exc.field)
            return
        except Conflict as exc:
            self._error(409, exc.code, str(exc), "idempotency_key")
            return
        except Exception as exc:
            err = error_json(exc)
            self._error(500, err["code"], err["message"])
            return
        self._send(202 if created else 200, job.to_json())

    def do_DELETE(self) -> None:
        if not self._auth():
            return
        m = _JOB_PATH.match(self.path.split("?", 1)[0])
        job = self.server.jobs.cancel(m.group(1)) if m else None
        if job is None:
            self._error(404, "not-found", f"no such resource: {self.path}")
            return
        self._send(200, job.to_json())
