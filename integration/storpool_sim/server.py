"""The wire of the emulator: routing, authentication, envelopes, errors, faults.

Paths: `/ctrl/1.0/<Query>[/<arg>]`, with optional `MultiCluster/`, `MultiCluster/AllClusters/`
or `RemoteCommand/<cluster>/[MultiCluster/]` prefixes. One emulator is one cluster; emulators
joined with `Emulator.join` form a multi-cluster location behind each one's endpoint:
`RemoteCommand/<cluster name>/` reaches the named cluster (its human-readable name, as in
ClustersList; an unknown name is refused), and a `MultiCluster/` request about one
object (`~<location>.<cluster>.<n>`, or a name) reaches the cluster that holds it; everything else
is served by the local cluster. GET arguments come as `?json=<quoted JSON>`, POST bodies as JSON.
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


def parse_path(path: str) -> tuple[str, str | None, str | None]:
    """`/ctrl/1.0/RemoteCommand/east/MultiCluster/VolumeDescribe/~a.b.c` -> ("VolumeDescribe", "~a.b.c", "east")."""
    if not path.startswith(PREFIX):
        raise SpApiError("unknownQuery", f"Unknown path {path}")
    parts = [unquote(p) for p in path[len(PREFIX):].split("/")]
    remote = None
    if parts and parts[0] == "RemoteCommand":
        if len(parts) < 3:
            raise SpApiError("unknownQuery", f"Unknown path {path}")
        remote, parts = parts[1], parts[2:]
    if parts and parts[0] == "MultiCluster":
        parts = parts[1:]
        if parts and parts[0] == "AllClusters":
            parts = parts[1:]
    if not parts or not parts[0]:
        raise SpApiError("unknownQuery", f"Unknown path {path}")
    arg = "/".join(parts[1:]) or None
    return parts[0], arg, remote


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
            query, arg, remote = parse_path(split.path)
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
        try:
            emu = emu.route(remote, arg)
        except SpApiError as e:
            self._send(e.status, e.envelope())
            return
        with emu.calls_lock:
            emu.calls[query] += 1
        faults = emu.faults
        delay = faults.latency(query)
        if delay:
            time.sleep(delay)
        gate = faults.take_hold(query)
        if gate is not None:
            gate.pass_through()
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

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def server_close(self) -> None:
        """Also drop the kept-open connections, as an API server that went down does: a client
        then finds its connection closed, not still answered by the stopped server."""
        with self._open_lock:
            conns, self._open = list(self._open), set()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        super().server_close()


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
        cluster_name: str = "sim",
        cluster_id: str = "b",
        location_id: str = "lab",
        location_name: str = "lab-location",
    ) -> None:
        if not token:
            raise ValueError("an API token is required")
        self.token = token
        self.dataplane = DataPlane(Path(data_dir), Path(dev_root), use_loop)
        self.model = Model(self.dataplane, clients=clients, templates=templates, capacity=capacity, clock=clock,
                           cluster_name=cluster_name, cluster_id=cluster_id, location_id=location_id,
                           location_name=location_name)
        self.peers: dict[str, Emulator] = {}
        self.faults = FaultInjector(self.model)
        self.calls: Counter[str] = Counter()
        self.calls_lock = threading.Lock()
        self._httpd = _Server((host, port), _Handler)
        self._httpd.emulator = self
        self._thread: threading.Thread | None = None
        self._listening = True
        self._extra: list[tuple[_Server, threading.Thread]] = []

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

    @property
    def cluster_key(self) -> str:
        """`<location>.<cluster>`: the prefix of this cluster's global ids (its SP_CLUSTER_ID)."""
        return f"{self.model.location_id}.{self.model.cluster_id}"

    def join(self, other: Emulator) -> None:
        """Put two clusters in one multi-cluster location: each one's endpoint reaches both, and
        each one's ClustersList names the others."""
        group = {self.model.cluster_name: self, other.model.cluster_name: other, **self.peers, **other.peers}
        for emu in group.values():
            emu.peers = {name: e for name, e in group.items() if e is not emu}
            emu.model.remotes = [e.model for e in emu.peers.values()]

    def link_location(self, other: Emulator) -> None:
        """Register two locations with each other (StorPool's LocationAdd on both sides): each
        lists the other in LocationsList, and snapshots one exports the other can copy."""
        a, b = self.model, other.model
        if a.location_id == b.location_id or a.location_name == b.location_name:
            raise ValueError(f"locations must differ in id and name: {a.location_id}/{a.location_name}")
        a.locations[b.location_name] = b
        b.locations[a.location_name] = a

    def route(self, remote: str | None, arg: str | None) -> Emulator:
        """The cluster a request is for: the named remote one; else the one holding the object
        the request is about; else this one."""
        if remote is not None:
            if remote == self.model.cluster_name:
                return self
            found = self.peers.get(remote)
            if found is None:
                # RemoteCommand takes the cluster's name; its id (`<location>.<cluster>`) is not a name.
                raise SpApiError("invalidParam", f"Unknown remote cluster {remote}")
            return found
        if not self.peers or not arg:
            return self
        if arg.startswith("~"):
            return next((e for e in self.peers.values() if arg[1:].startswith(e.cluster_key + ".")), self)
        if arg in self.model.by_name:
            return self
        return next((e for e in self.peers.values() if arg in e.model.by_name), self)

    def add_endpoint(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Another API address of this cluster (StorPool's API runs on several management nodes):
        what `sp.alternative.endpoint` points at. Same cluster, same token."""
        httpd = _Server((host, port), _Handler)
        httpd.emulator = self
        thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), name="storpool-sim-alt", daemon=True)
        thread.start()
        self._extra.append((httpd, thread))
        return str(httpd.server_address[0]), int(httpd.server_address[1])

    def stop_listening(self) -> None:
        """The primary API address stops answering (its management node is down); the cluster,
        its devices and any other endpoint stay."""
        if not self._listening:
            return
        self._listening = False
        if self._thread is not None:
            self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def stop(self) -> None:
        """Stop answering, then release devices and write the final state."""
        self.stop_listening()
        for httpd, thread in self._extra:
            httpd.shutdown()
            httpd.server_close()
            thread.join(timeout=10)
        self.model.close()
