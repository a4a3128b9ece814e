"""The wire of the emulator: routing, authentication, envelopes, errors, faults.

Paths: `/ctrl/1.0/<Query>[/<arg>]`, with optional `MultiCluster/`, `MultiCluster/AllClusters/`
or `RemoteCommand/<cluster>/[MultiCluster/]` prefixes (one cluster is emulated, so all of them
reach the same model). GET arguments come as `?json=<quoted JSON>`, POST bodies as JSON.
Answers: `{"generation": N, "data": ...}` or `{"error": {"name", "descr", "transient"?}}` with a
non-200 status. Admin endpoints under `/_sim/` (same token): `POST /_sim/faults`,
`GET /_sim/calls`.
"""

from __future__ import annotations

import hmac
import json
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from cloudstack_storpool.httpjson import end_headers_with
from integration.storpool_sim.dataplane import DataPlane
from integration.storpool_sim.faults import FaultInjector
from integration.storpool_sim.model import DEFAULT_TEMPLATES, Model, SpApiError, Template

log = logging.getLogger(__name__)

PREFIX = "/ctrl/1.0/"


def parse_path(path: str) -> tuple[str, str | None]:
    """`/ctrl/1.0/MultiCluster/VolumeDescribe/~a.b.c` -> ("VolumeDescribe", "~a.b.c")."""
    if not path.startswith(PREFIX):
        raise SpApiError("unknownQuery", f"Unknown path {path}")
    parts = [unquote(p) for p in path[len(PREFIX):].split("/")]
    if parts and parts[0] == "RemoteCommand":
        if len(parts) < 3:
            raise SpApiError("unknownQuery", f"Unknown path {path}")
        parts = parts[2:]
    if parts and parts[0] == "MultiCluster":
        parts = parts[1:]
        if parts and parts[0] == "AllClusters":
            parts = parts[1:]
    if not parts or not parts[0]:
        raise SpApiError("unknownQuery", f"Unknown path {path}")
    arg = "/".join(parts[1:]) or None
    return parts[0], arg


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # with one write per reply: no delayed-ACK stall on keep-alive

    def log_message(self, format: str, *args: Any) -> None:
        """Request lines go to debug logging; the token is in a header, never in the line."""
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _send(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        end_headers_with(self, body)

    def _drop(self) -> None:
        """Close the socket without an answer: the client sees a reset/empty reply."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _authorized(self) -> bool:
        got = self.headers.get("Authorization", "")
        want = f"Storpool v1:{self.server.emulator.token}"
        return hmac.compare_digest(got.encode(), want.encode())

    def _serve(self, method: str) -> None:
        emu = self.server.emulator
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not self._authorized():
            err = SpApiError("authError", "Missing or invalid Authorization header")
            self._send(err.status, err.envelope())
            return
        if split.path.startswith("/_sim/"):
            self._admin(method, split.path, raw)
            return
        try:
            query, arg = parse_path(split.path)
            body: Any = None
            if method == "GET":
                qs = parse_qs(split.query)
                if "json" in qs:
                    body = json.loads(qs["json"][0])
            elif raw:
                body = json.loads(raw)
        except SpApiError as e:
            self._send(e.status, e.envelope())
            return
        except ValueError as e:
            err = SpApiError("invalidParam", f"Invalid JSON: {e}")
            self._send(err.status, err.envelope())
            return
        with emu.calls_lock:
            emu.calls[query] += 1
        faults = emu.faults
        delay = faults.latency(query)
        if delay:
            time.sleep(delay)
        if faults.take_drop_before(query):
            self._drop()
            return
        injected = faults.take_error(query)
        if injected is not None:
            self._send(injected.status, injected.envelope())
            return
        try:
            data = emu.model.handle(method, query, arg, body)
        except SpApiError as e:
            self._send(e.status, e.envelope())
            return
        except Exception as e:
            log.exception("emulator bug handling %s", query)
            err = SpApiError("internalError", f"{type(e).__name__}: {e}")
            self._send(err.status, err.envelope())
            return
        if faults.take_drop_after(query):
            self._drop()
            return
        self._send(200, {"generation": emu.model.generation, "data": data})

    def _admin(self, method: str, path: str, raw: bytes) -> None:
        emu = self.server.emulator
        try:
            if path == "/_sim/faults" and method == "POST":
                emu.faults.apply_json(json.loads(raw or b"{}"))
                self._send(200, {"data": {"ok": True}})
            elif path == "/_sim/calls" and method == "GET":
                with emu.calls_lock:
                    self._send(200, {"data": dict(emu.calls)})
            else:
                self._send(404, SpApiError("unknownQuery", f"Unknown admin path {path}").envelope())
        except (ValueError, KeyError, TypeError) as e:
            self._send(400, SpApiError("invalidParam", f"{type(e).__name__}: {e}").envelope())


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256
    """The stdlib default (5) resets connections under the bursts the concurrency tests make."""
    emulator: Emulator


class Emulator:
    """Model + data plane + faults + HTTP server: one emulated StorPool cluster."""

    def __init__(
        self,
        data_dir: Path,
        dev_root: Path,
        *,
        token: str,
        clients: tuple[int, ...] | list[int] = (1, 2, 3),
        templates: tuple[Template, ...] | list[Template] = DEFAULT_TEMPLATES,
        capacity: int = 1 << 40,
        use_loop: bool | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not token:
            raise ValueError("an API token is required")
        self.token = token
        self.dataplane = DataPlane(Path(data_dir), Path(dev_root), use_loop)
        self.model = Model(self.dataplane, clients=clients, templates=templates, capacity=capacity, clock=clock)
        self.faults = FaultInjector(self.model)
        self.calls: Counter[str] = Counter()
        self.calls_lock = threading.Lock()
        self._httpd = _Server((host, port), _Handler)
        self._httpd.emulator = self
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> Emulator:
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="storpool-sim",
                                        daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def stop(self) -> None:
        """Stop answering, then release devices and write the final state."""
        if self._thread is not None:
            self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.model.close()
