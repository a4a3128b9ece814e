"""The HTTP plumbing shared by the KVM agent's API (agent/server.py) and the driver service's
(service/app.py): a bounded server behind one bearer token, JSON in and out.

Both face the same threats, so they share one implementation of the defences:

* A connection costs a worker thread only while a complete request is being answered. One
  event-loop thread accepts connections, completes TLS handshakes and collects request heads
  without blocking; a head is handed to the bounded worker pool only once its blank line has
  arrived. Half-open or slow-drip connections therefore hold a file descriptor, never a thread.
* Every phase has a deadline: the TLS handshake and the head (`header_timeout`, counted from
  the connection or from the first byte of the next keep-alive request), the body
  (`body_timeout`, total, not per read), an idle keep-alive connection (`idle_timeout`), and a
  write to a client that stopped reading (`write_timeout`).
* Connections are capped (`max_connections`); at the cap an idle connection is closed to make
  room (one that never authenticated first, the longest idle of those), so an authenticated
  caller still gets in, and keeps its keep-alive connection, while a flood is held.
* The token is compared in constant time and checked before the body is read, for every
  method (unknown methods included); a body is refused unread when it is too big or chunked,
  and the connection is then closed rather than drained. A body a route did not read is
  drained (authenticated, small) or the connection is closed, so it is never taken for the
  next keep-alive request. Every error, the stdlib's own included, is a JSON body.
* A reply is one write (head and body together) with Nagle off, so a keep-alive caller never
  waits on delayed ACKs.

Routes and error mapping stay with each server. The stdlib's `BaseHTTPRequestHandler` still
parses request lines and headers; only its connection loop is replaced.
"""

from __future__ import annotations

import contextlib
import hmac
import http.client
import ipaddress
import json
import logging
import queue
import re
import selectors
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

from cloudstack_storpool.errors import ValidationError

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20
MAX_HEAD = 64 << 10
RETRY_AFTER = "5"

_HEAD_END = re.compile(rb"\r?\n\r?\n")


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


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, `localhost`)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _Reader:
    """The request side of one connection: a buffer the event loop fills without blocking and
    the worker reads from with a deadline (total for the phase, not per `recv`)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.deadline = 0.0
        self.head_left = 0
        """Bytes `readline` may still return for this request's head (line and headers)."""

    def _fill(self) -> bool:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("read deadline passed")
        self.sock.settimeout(remaining)
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buf += data
        return True

    def readline(self, limit: int = -1) -> bytes:
        while True:
            end = self.buf.find(b"\n", 0, limit if limit > 0 else None)
            if end >= 0:
                n = end + 1
            elif 0 < limit <= len(self.buf):
                n = limit
            elif self._fill():
                continue
            else:
                n = len(self.buf)
            out = bytes(self.buf[:n])
            del self.buf[:n]
            self.head_left -= len(out)
            if self.head_left < 0:
                # What the stdlib answers with 431 (it would otherwise take 100 lines of 64 KiB).
                raise http.client.LineTooLong("request head")
            return out

    def read(self, n: int) -> bytes:
        while len(self.buf) < n and self._fill():
            pass
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def has_head(self) -> bool:
        return _HEAD_END.search(self.buf) is not None or (self.buf.startswith((b"\r\n", b"\n")))


class _Writer:
    """The reply side: one `sendall` per reply, bounded by the write timeout."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self.sock = sock
        self.timeout = timeout

    def write(self, data: bytes) -> int:
        self.sock.settimeout(self.timeout)
        self.sock.sendall(data)
        return len(data)

    def flush(self) -> None:
        pass


class _Conn:
    """One client connection: owned by the event loop while idle, by one worker while served."""

    __slots__ = ("addr", "expires", "handler", "handshaking", "reader", "since", "sock", "trusted")

    def __init__(self, sock: socket.socket, addr: Any, now: float, header_timeout: float, tls: bool) -> None:
        self.sock = sock
        self.addr = addr
        self.since = now
        self.expires = now + header_timeout
        self.reader = _Reader(sock)
        self.handler: JsonHandler | None = None
        self.handshaking = tls
        self.trusted = False
        """It carried the right token at least once: evicted only after every untrusted one."""


class TokenServer:
    """A server whose every request must carry `Authorization: Bearer <token>`.

    Same surface as the stdlib servers for the callers that matter (`serve_forever`,
    `shutdown`, `server_close`, `server_address`), with the limits described in the module."""

    role = "http"
    """Who serves ("agent", "service"): names the token in errors and the serving threads."""
    request_queue_size = 128
    workers = 16
    max_connections = 128
    header_timeout = 10.0
    body_timeout = 30.0
    idle_timeout = 60.0
    write_timeout = 30.0

    def __init__(self, address: tuple[str, int], token: str, handler: type[JsonHandler], *,
                 tls: ssl.SSLContext | None = None) -> None:
        if not token:
            raise ValueError(f"the {self.role} token must not be empty")
        self.token = token.encode()
        self.handler_class = handler
        self.tls = tls
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind(address)
            self.socket.listen(self.request_queue_size)
            self.socket.setblocking(False)
        except OSError:
            self.socket.close()
            raise
        self.server_address: tuple[Any, ...] = self.socket.getsockname()
        self._conns: dict[int, _Conn] = {}
        """Every open connection, by file descriptor (idle and served)."""
        self._idle: dict[int, _Conn] = {}
        """The connections the event loop watches."""
        self._returned: queue.SimpleQueue[_Conn] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix=f"{self.role}-worker")
        self._stop = False
        self._stopped = threading.Event()
        self._stopped.set()
        self._lock = threading.Lock()
        self._closed = False

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = str(host)
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"

    def authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            # Still spend a comparison, so a missing header costs what a wrong one does.
            hmac.compare_digest(b"", self.token)
            return False
        return hmac.compare_digest(header[len("Bearer "):].strip().encode(), self.token)

    def open_connections(self) -> int:
        with self._lock:
            return len(self._conns)

    # -- the event loop --------------------------------------------------------------------------

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._stopped.clear()
        sel = selectors.DefaultSelector()
        sel.register(self.socket, selectors.EVENT_READ, None)
        sel.register(self._wake_r, selectors.EVENT_READ, self._wake_r)
        next_sweep = 0.0
        try:
            while not self._stop:
                for key, _events in sel.select(poll_interval):
                    if key.data is None:
                        self._accept(sel)
                    elif key.data is self._wake_r:
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)
                        self._take_back(sel)
                    else:
                        self._readable(sel, key.data)
                now = time.monotonic()
                if now >= next_sweep:
                    self._expire(sel, now)
                    next_sweep = now + min(poll_interval, 0.5)
        finally:
            sel.close()
            self._stop = False
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop the loop and wait until `serve_forever` returned (at once when it is not running)."""
        self._stop = True
        self._wake()
        self._stopped.wait()

    def server_close(self) -> None:
        """Release the listening socket and every connection; answers being written may fail."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            conns = list(self._conns.values())
            self._conns.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)
        for c in conns:
            self._close_sock(c.sock)
        self.socket.close()
        self._wake_r.close()
        self._wake_w.close()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _accept(self, sel: selectors.BaseSelector) -> None:
        for _ in range(64):
            try:
                sock, addr = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: let the backlog wait
                log.warning("%s: accept failed: %s", self.role, exc)
                return
            now = time.monotonic()
            with self._lock:
                full = len(self._conns) >= self.max_connections
            if full and not self._evict(sel):
                self._close_sock(sock)
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            if self.tls is not None:
                try:
                    sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                except (OSError, ValueError):
                    self._close_sock(sock)
                    continue
            conn = _Conn(sock, addr, now, self.header_timeout, self.tls is not None)
            with self._lock:
                self._conns[sock.fileno()] = conn
            self._watch(sel, conn, selectors.EVENT_READ)
            if self.tls is not None:
                self._handshake(sel, conn)

    def _evict(self, sel: selectors.BaseSelector) -> bool:
        """Make room by closing an idle connection: one that never authenticated first, the one
        idle the longest among those; False when none is idle."""
        if not self._idle:
            return False
        victim = min(self._idle.values(), key=lambda c: (c.trusted, c.since))
        self._drop(sel, victim)
        return True

    def _watch(self, sel: selectors.BaseSelector, conn: _Conn, events: int) -> None:
        fd = conn.sock.fileno()
        if fd in self._idle:
            sel.modify(conn.sock, events, conn)
        else:
            sel.register(conn.sock, events, conn)
            self._idle[fd] = conn

    def _unwatch(self, sel: selectors.BaseSelector, conn: _Conn) -> None:
        fd = conn.sock.fileno()
        if self._idle.pop(fd, None) is not None:
            sel.unregister(conn.sock)

    def _drop(self, sel: selectors.BaseSelector, conn: _Conn) -> None:
        self._unwatch(sel, conn)
        self._forget(conn)

    def _forget(self, conn: _Conn) -> None:
        with self._lock:
            with contextlib.suppress(OSError, ValueError):
                self._conns.pop(conn.sock.fileno(), None)
        self._close_sock(conn.sock)

    @staticmethod
    def _close_sock(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.close()

    def _handshake(self, sel: selectors.BaseSelector, conn: _Conn) -> None:
        assert isinstance(conn.sock, ssl.SSLSocket)
        try:
            conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._watch(sel, conn, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._watch(sel, conn, selectors.EVENT_WRITE)
            return
        except (OSError, ValueError) as exc:
            log.info("%s: TLS handshake with %s failed: %s", self.role, conn.addr[0], exc)
            self._drop(sel, conn)
            return
        conn.handshaking = False
        self._watch(sel, conn, selectors.EVENT_READ)
        self._readable(sel, conn)

    def _readable(self, sel: selectors.BaseSelector, conn: _Conn) -> None:
        if conn.handshaking:
            self._handshake(sel, conn)
            return
        reader = conn.reader
        was_empty = not reader.buf
        try:
            while len(reader.buf) <= MAX_HEAD:
                data = conn.sock.recv(65536)
                if not data:
                    self._drop(sel, conn)
                    return
                reader.buf += data
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        except (OSError, ValueError):
            self._drop(sel, conn)
            return
        if was_empty and reader.buf:
            # The head of a keep-alive connection's next request has its own deadline.
            conn.expires = time.monotonic() + self.header_timeout
        if reader.has_head() or len(reader.buf) > MAX_HEAD:
            # (An oversized head goes to the worker too, which answers 431 and closes.)
            self._unwatch(sel, conn)
            conn.expires = float("inf")
            self._pool.submit(self._serve, conn)

    def _take_back(self, sel: selectors.BaseSelector) -> None:
        now = time.monotonic()
        while True:
            try:
                conn = self._returned.get_nowait()
            except queue.Empty:
                return
            conn.since = now
            conn.expires = now + (self.header_timeout if conn.reader.buf else self.idle_timeout)
            try:
                conn.sock.setblocking(False)
                self._watch(sel, conn, selectors.EVENT_READ)
            except (OSError, ValueError):
                self._forget(conn)
                continue
            # TLS may hold decrypted bytes the selector cannot see.
            if isinstance(conn.sock, ssl.SSLSocket) and conn.sock.pending():
                self._readable(sel, conn)

    def _expire(self, sel: selectors.BaseSelector, now: float) -> None:
        for conn in [c for c in self._idle.values() if c.expires <= now]:
            self._drop(sel, conn)

    # -- a worker ----------------------------------------------------------------------------

    def _serve(self, conn: _Conn) -> None:
        """Answer every complete request the connection has buffered, then hand it back."""
        try:
            if conn.handler is None:
                conn.handler = self.handler_class.for_connection(conn, self)
            h = conn.handler
            while True:
                conn.reader.deadline = time.monotonic() + self.header_timeout
                conn.reader.head_left = 2 * MAX_HEAD
                h.handle_one_request()
                conn.trusted = conn.trusted or h._authed
                if h.close_connection or self._stop:
                    break
                if not conn.reader.has_head():
                    self._returned.put(conn)
                    self._wake()
                    return
        except Exception as exc:
            # A client that vanished or stalled; nothing to answer.
            log.debug("%s: connection from %s ended: %s", self.role, conn.addr[0], exc)
        self._forget(conn)


def end_headers_with(handler: BaseHTTPRequestHandler, body: bytes) -> None:
    """End the head and send it with `body` in one write (what `end_headers` + `wfile.write`
    do in two): with TCP_NODELAY a reply is then one segment, and without it the second write
    no longer waits for the client's delayed ACK of the first (a 40 ms stall per keep-alive
    request). Shared with the stand-ins' servers."""
    buffered: list[bytes] = getattr(handler, "_headers_buffer", [])
    handler._headers_buffer = []  # type: ignore[attr-defined]
    handler.wfile.write(b"".join(buffered) + b"\r\n" + body)


def serve_in_thread(server: TokenServer) -> threading.Thread:
    """Run the server in a background thread (tests, the local stack launcher)."""
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"{server.role}-http",
                         daemon=True)
    t.start()
    return t


_STATUS_CODES = {400: "bad-request", 404: "not-found", 405: "method-not-allowed", 408: "timeout",
                 413: "too-large", 414: "uri-too-long", 431: "headers-too-large", 501: "not-implemented",
                 505: "http-version"}


class JsonHandler(BaseHTTPRequestHandler):
    """Responses are JSON objects; errors are `{"error": {"code", "message", "field"?}}`.

    Instances live as long as their connection (see `TokenServer._serve`); `handle_one_request`
    is called once per request."""

    server: TokenServer  # type: ignore[assignment]
    protocol_version = "HTTP/1.1"
    _authed = False
    _body_done = True
    _headers_buffer: list[bytes]
    _date: tuple[int, str] = (0, "")
    """The Date header of the current second (shared by the class: one assignment, thread-safe)."""

    def date_time_string(self, timestamp: float | None = None) -> str:
        # The stdlib formats the Date header afresh for every reply; it only changes once a second.
        if timestamp is not None:
            return super().date_time_string(timestamp)
        now = int(time.time())
        second, text = JsonHandler._date
        if second != now:
            text = super().date_time_string(now)
            JsonHandler._date = (now, text)
        return text

    @classmethod
    def for_connection(cls, conn: _Conn, server: TokenServer) -> JsonHandler:
        h = cls.__new__(cls)
        h.request = conn.sock
        h.connection = conn.sock
        h.client_address = conn.addr
        h.server = server
        h.rfile = conn.reader  # type: ignore[assignment]
        h.wfile = _Writer(conn.sock, server.write_timeout)  # type: ignore[assignment]
        h.close_connection = True
        return h

    def parse_request(self) -> bool:
        self._authed = False
        self._body_done = True
        ok = super().parse_request()
        if ok:
            self._body_done = not (self.headers.get("Content-Length") or self.headers.get("Transfer-Encoding"))
        return ok

    def handle_expect_100(self) -> bool:
        # "100 Continue" would invite the body before the token was checked: say nothing and
        # let the client send it after its own wait.
        return True

    def __getattr__(self, name: str) -> Any:
        # Any method without a route (HEAD, OPTIONS, PATCH, made up) is authenticated first and
        # then answered 405 in JSON, instead of the stdlib's unauthenticated 501 HTML page.
        if name.startswith("do_"):
            return lambda: self._not_allowed(name[3:])
        raise AttributeError(name)

    def allowed_methods(self) -> list[str]:
        return sorted(m[3:] for m in dir(type(self)) if m.startswith("do_"))

    def _not_allowed(self, method: str) -> None:
        if self._auth():
            allowed = self.allowed_methods()
            self._error(405, "method-not-allowed", f"{method} is not supported", headers={"Allow": ", ".join(allowed)})

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # The stdlib's own refusals (bad request line, head too large, bad version): the request
        # was not understood, so its framing is not either: answer and close.
        self.close_connection = True
        if self.request_version not in ("HTTP/1.0", "HTTP/1.1"):
            # Unparsed or unsupported version: still answer with a head the client can read.
            self.request_version = "HTTP/1.1"
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        self._error(code, _STATUS_CODES.get(code, "bad-request"), message or phrase)

    def _settle_body(self) -> None:
        """Before replying: a body the route did not read is drained when the caller is
        authenticated and it is small, else the connection is closed after the reply."""
        if self._body_done:
            return
        self._body_done = True
        if not self._authed or self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            return
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = -1
        if n < 0 or n > MAX_BODY:
            self.close_connection = True
            return
        try:
            self._read_exactly(n)
        except (OSError, ValidationError):
            self.close_connection = True

    def _read_exactly(self, n: int) -> bytes:
        reader = self.rfile
        assert isinstance(reader, _Reader)
        limit = self.server.body_timeout
        reader.deadline = time.monotonic() + limit
        try:
            data = reader.read(n)
        except TimeoutError:
            self.close_connection = True
            raise ValidationError("body", f"not received within {limit:g} s") from None
        if len(data) < n:
            self.close_connection = True
            raise ValidationError("body", f"ended after {len(data)} of {n} bytes")
        return data

    def _send_bytes(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        self._settle_body()
        self.send_response(status)
        if status != 204:
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        end_headers_with(self, data if status != 204 and getattr(self, "command", None) != "HEAD" else b"")

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
            self._authed = True
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
        self._body_done = True
        return self._read_exactly(n)
