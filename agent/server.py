"""The agent's HTTP JSON API (`cloudstack-storpool agent serve`).

Every request must carry `Authorization: Bearer <token>`; the token is compared in constant
time and checked before the body is read, so an unauthenticated client cannot make the agent
parse anything. Routes:

  GET    /v1/facts          host facts (synchronous)
  GET    /v1/heartbeat      the heartbeat loop's last status on this host (null before it ran)
  POST   /v1/jobs           {"command", "args", "idempotency_key"?} -> 202 job (200 if it existed)
  GET    /v1/jobs           all known jobs
  GET    /v1/jobs/<id>      state, progress, result, error
  DELETE /v1/jobs/<id>      cancel
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from agent.commands import Context, FactsRequest, RunControl, facts
from agent.hostconfig import HostConfig
from agent.jobs import JobManager, error_json
from cloudstack_storpool.errors import Conflict, ValidationError

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20
_JOB_PATH = re.compile(r"^/v1/jobs/([0-9a-f]{32})$")


def heartbeat_status(host: HostConfig) -> dict[str, Any] | None:
    """The heartbeat loop's last status on this host (None before its first round), so the
    management side can see a host's own view of its storage heartbeat over the agent link."""
    from heartbeat.hostloop import read_status

    try:
        return read_status(Path(host.heartbeat_status_file))
    except (OSError, ValueError) as exc:
        return {"result": "unknown", "reason": f"cannot read {host.heartbeat_status_file}: {exc}"}


class AgentServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], token: str, context_factory: Callable[[], Context],
                 *, max_copies: int = 2) -> None:
        if not token:
            raise ValueError("the agent token must not be empty")
        self.token = token.encode()
        self.context_factory = context_factory
        self.jobs = JobManager(context_factory, max_copies=max_copies)
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[len("Bearer "):].strip().encode(), self.token)

    def shutdown_all(self) -> None:
        self.shutdown()
        self.jobs.cancel_all()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: AgentServer
    protocol_version = "HTTP/1.1"
    server_version = "cloudstack-storpool-agent"

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines only (never headers: they hold the token).
        log.info("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, code: str, message: str, fld: str | None = None,
               headers: dict[str, str] | None = None) -> None:
        err: dict[str, Any] = {"code": code, "message": message}
        if fld is not None:
            err["field"] = fld
        self._send(status, {"error": err}, headers)

    def _auth(self) -> bool:
        if self.server.authorized(self.headers.get("Authorization")):
            return True
        # The body (if any) is not read; close the connection instead of draining it.
        self.close_connection = True
        self._error(401, "unauthorized", "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})
        return False

    def _body(self) -> Any:
        length = self.headers.get("Content-Length")
        if length is None:
            raise ValidationError("body", "a JSON body with Content-Length is required")
        try:
            n = int(length)
        except ValueError as exc:
            raise ValidationError("body", "bad Content-Length") from exc
        if n < 0 or n > MAX_BODY:
            self.close_connection = True
            raise ValidationError("body", f"must be at most {MAX_BODY} bytes")
        raw = self.rfile.read(n)
        try:
            return json.loads(raw or b"null")
        except ValueError as exc:
            raise ValidationError("body", f"not valid JSON: {exc}") from exc

    def do_GET(self) -> None:
        if not self._auth():
            return
        path = self.path.split("?", 1)[0]
        if path == "/v1/facts":
            try:
                ctx = self.server.context_factory()
                self._send(200, facts(ctx, FactsRequest(), RunControl()))
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
            body = self._body()
            if not isinstance(body, dict):
                raise ValidationError("body", "must be a JSON object")
            command = body.get("command")
            if not isinstance(command, str) or not command:
                raise ValidationError("command", "is required")
            unknown = set(body) - {"command", "args", "idempotency_key"}
            if unknown:
                raise ValidationError(sorted(unknown)[0], "unknown field (allowed: command, args, idempotency_key)")
            key = body.get("idempotency_key", self.headers.get("Idempotency-Key"))
            job, created = self.server.jobs.submit(command, body.get("args"), key)
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

    def do_PUT(self) -> None:
        if self._auth():
            self._error(405, "method-not-allowed", "PUT is not supported")


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:PORT`)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValidationError("listen", f"{value!r} is not HOST:PORT")
    host = host.strip("[]")
    p = int(port)
    if not 0 <= p <= 65535:
        raise ValidationError("listen", f"port {p} is out of range")
    return host, p


def serve_in_thread(server: AgentServer) -> threading.Thread:
    """Run the server in a background thread (tests, the local stack launcher)."""
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="agent-http", daemon=True)
    t.start()
    return t
