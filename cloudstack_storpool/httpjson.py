"""The HTTP plumbing shared by the KVM agent's API (agent/server.py) and the driver service's
(service/app.py): a stdlib threading server behind one bearer token, JSON in and out.

Both face the same threats, so they share one implementation of the defences: the token is
compared in constant time and checked before the body is read, so an unauthenticated client
cannot make the server parse anything; a body is refused unread when it is too big or
chunked, and the connection is then closed rather than drained. Routes and error mapping stay
with each server.
"""

from __future__ import annotations

import hmac
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cloudstack_storpool.errors import ValidationError

MAX_BODY = 1 << 20
RETRY_AFTER = "5"


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


class TokenServer(ThreadingHTTPServer):
    """A server whose every request must carry `Authorization: Bearer <token>`."""

    daemon_threads = True
    role = "http"
    """Who serves ("agent", "service"): names the token in errors and the serving thread."""

    def __init__(self, address: tuple[str, int], token: str, handler: type[BaseHTTPRequestHandler]) -> None:
        if not token:
            raise ValueError(f"the {self.role} token must not be empty")
        self.token = token.encode()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = str(host)
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            # Still spend a comparison, so a missing header costs what a wrong one does.
            hmac.compare_digest(b"", self.token)
            return False
        return hmac.compare_digest(header[len("Bearer "):].strip().encode(), self.token)


def serve_in_thread(server: TokenServer) -> threading.Thread:
    """Run the server in a background thread (tests, the local stack launcher)."""
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"{server.role}-http",
                         daemon=True)
    t.start()
    return t


class JsonHandler(BaseHTTPRequestHandler):
    """Responses are JSON objects; errors are `{"error": {"code", "message", "field"?}}`."""

    server: TokenServer
    protocol_version = "HTTP/1.1"

    def _send_bytes(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        if status != 204:
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if status != 204:
            self.wfile.write(data)

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self._send_bytes(status, json.dumps(body).encode(), headers)

    def _error(self, status: int, code: str, message: str, fld: str | None = None,
               headers: dict[str, str] | None = None) -> None:
        err: dict[str, Any] = {"code": code, "message": message}
        if fld is not None:
            err["field"] = fld
        if status == 503:
            headers = {**(headers or {}), "Retry-After": RETRY_AFTER}
        self._send(status, {"error": err}, headers)

    def _auth(self) -> bool:
        """True when the request may go on; else 401 has been answered."""
        if self.server.authorized(self.headers.get("Authorization")):
            return True
        # The body is never read: close the connection rather than drain it.
        self.close_connection = True
        self._error(401, "unauthorized", "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})
        return False

    def _read_body(self) -> bytes | None:
        """The raw body, None without Content-Length. Refused unread when chunked or too big."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise ValidationError("body", "chunked bodies are not accepted; send Content-Length")
        length = self.headers.get("Content-Length")
        if length is None:
            return None
        try:
            n = int(length)
        except ValueError:
            self.close_connection = True
            raise ValidationError("body", "bad Content-Length") from None
        if n < 0 or n > MAX_BODY:
            self.close_connection = True
            raise ValidationError("body", f"must be at most {MAX_BODY} bytes")
        return self.rfile.read(n)
