"""The HTTP plumbing shared by the KVM agent's API (agent/server.py) and the driver service's
(service/app.py): a bounded server behind one bearer token, JSON in and out.

Request heads and bodies are framed by llhttp (Node.js's HTTP parser, through `httptools`),
which refuses what a lenient parser would read two ways: signs, underscores or a second value in
`Content-Length`, `Content-Length` beside `Transfer-Encoding`, a bare LF or CR inside a CRLF
head, control characters in a field, anything but a token for a field name, a request line
with stray bytes, a version that is not `HTTP/d.d`. The defences around it are the project's:

* A connection costs a worker thread only while a complete request head is being answered.
  Idle connections wait in one epoll set, each armed for a single event; the worker that takes
  an event reads what arrived without blocking (or steps the TLS handshake), feeds the head's
  bytes to the parser and re-arms the connection; once the parser has a whole head it answers
  in that same thread, so a request is never passed between threads. Half-open, slow-drip or
  oversized heads therefore hold a file descriptor, never a thread: a head past `MAX_HEAD`
  bytes is answered 431 as soon as those bytes are there. One more thread accepts, caps and
  expires connections.
* Every phase has a deadline: the TLS handshake and the head (`header_timeout`, counted from
  the connection or from the first byte of the next keep-alive request), the body
  (`body_timeout`, total, not per read), an idle keep-alive connection (`idle_timeout`), and a
  write to a client that stopped reading (`write_timeout`).
* Connections are capped (`max_connections`); at the cap an idle connection is closed to make
  room (one that never authenticated first, the longest idle of those), so an authenticated
  caller still gets in, and keeps its keep-alive connection, while a flood is held.
* The token is compared in constant time, here, once for every request of every method the
  parser knows, before the route runs and before one byte of the body is read from the socket
  or given to the parser; a body is refused unread when it is too big or chunked, and the
  connection is then closed rather than drained. A body a route did not read is drained
  (authenticated, small) or the connection is closed, so it is never taken for the next
  keep-alive request. Every answer, refusals of the head included, is a JSON body.
* A reply is one write (head and body together) with Nagle off, so a keep-alive caller never
  waits on delayed ACKs.

Routes and error mapping stay with each server (`Routes`, `JsonHandler.handle`).
"""

from __future__ import annotations

import contextlib
import email.utils
import hmac
import ipaddress
import json
import logging
import re
import select
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, Generic, TypeVar

import httptools

from cloudstack_storpool.errors import ValidationError

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20
MAX_HEAD = 64 << 10
"""A request head (request line and fields) is at most this many bytes: 431 beyond."""
MAX_FIELDS = 100
RETRY_AFTER = "5"

_HEAD_END = b"\r\n\r\n"


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


class Headers:
    """A request's header fields by lower-cased name (the first of repeated ones), read with
    `get` the way the stdlib's message object is."""

    __slots__ = ("_fields",)

    def __init__(self, fields: dict[str, str]) -> None:
        self._fields = fields

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._fields.get(name.lower(), default)


_SINGLE = frozenset({"authorization", "host"})
"""Fields a request may carry once with one value (llhttp itself refuses a second
`Content-Length` and `Content-Length` beside `Transfer-Encoding`)."""


class Request:
    """One request as the parser saw it: head first, then (only once asked for) its body."""

    __slots__ = ("body", "complete", "count", "fields", "keep_alive", "method", "problem", "target", "version")

    def __init__(self) -> None:
        self.target = b""
        self.method = ""
        self.version = (1, 1)
        self.keep_alive = False
        self.fields: dict[str, str] = {}
        self.count = 0
        """Header fields seen, repeats included."""
        self.problem: tuple[int, str] | None = None
        """A refusal the parser's callbacks found (status, message): too many fields, a repeat."""
        self.body = bytearray()
        self.complete = False
        """The parser saw the end of the message (for a request without a body: with its head)."""

    @property
    def length(self) -> int | None:
        """The declared body length (llhttp has checked its digits), None without one."""
        value = self.fields.get("content-length")
        return None if value is None else int(value)


class _Parser:
    """llhttp's callbacks for one connection: they fill the request being read."""

    __slots__ = ("current", "heads", "llhttp")

    def __init__(self) -> None:
        self.llhttp = httptools.HttpRequestParser(self)
        self.current = Request()
        self.heads: deque[Request] = deque()
        """Requests whose head is complete, in order (one at a time: bytes past a head's end are
        fed only once that request asked for its body)."""

    def on_message_begin(self) -> None:
        self.current = Request()

    def on_url(self, url: bytes) -> None:
        self.current.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        req = self.current
        fields = req.fields
        req.count += 1
        if req.count > MAX_FIELDS:
            req.problem = req.problem or (431, f"more than {MAX_FIELDS} header fields")
            return
        key = name.lower().decode("ascii")
        text = value.decode("iso-8859-1")
        if key in fields:
            if key in _SINGLE and fields[key] != text:
                req.problem = req.problem or (400, f"conflicting {key} fields")
            return
        fields[key] = text

    def on_headers_complete(self) -> None:
        req, llhttp = self.current, self.llhttp
        req.method = llhttp.get_method().decode("ascii")
        major, _, minor = llhttp.get_http_version().partition(".")
        req.version = (int(major), int(minor or 0))
        req.keep_alive = llhttp.should_keep_alive()
        self.heads.append(req)

    def on_body(self, data: bytes) -> None:
        self.current.body += data

    def on_message_complete(self) -> None:
        self.current.complete = True


class _Refusal(Exception):
    """A head the server will not serve: answered with `status` and the connection closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Writer:
    """The reply side: one `sendall` per reply, bounded by the write timeout."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self.sock = sock
        self.timeout = timeout

    def write(self, data: bytes) -> int:
        sock = self.sock
        rest = memoryview(data)
        if sock.gettimeout() == 0.0 and not isinstance(sock, ssl.SSLSocket):
            # Still non-blocking (the request was read from the buffer): a reply fits the socket
            # buffer, so one send usually does it, without switching modes (two system calls).
            try:
                rest = rest[sock.send(rest):]
            except BlockingIOError:
                pass
            if not rest:
                return len(data)
        sock.settimeout(self.timeout)
        sock.sendall(rest)
        return len(data)


class _Conn:
    """One client connection: armed in the epoll set while idle (waiting for bytes), held by
    exactly one worker while it reads or answers."""

    __slots__ = ("addr", "buf", "expires", "handler", "handshaking", "head_size", "parser", "since", "sock",
                 "tail", "trusted", "writer")

    def __init__(self, sock: socket.socket, addr: Any, now: float, header_timeout: float, tls: bool,
                 write_timeout: float) -> None:
        self.sock = sock
        self.addr = addr
        self.since = now
        self.expires = now + header_timeout
        self.buf = bytearray()
        """Bytes received and not yet given to the parser."""
        self.parser = _Parser()
        self.head_size = 0
        """Bytes of the current request's head given to the parser so far."""
        self.tail = b""
        """The last bytes of the head given to the parser (a head's end may straddle reads)."""
        self.handler: JsonHandler | None = None
        self.writer = _Writer(sock, write_timeout)
        self.handshaking = tls
        self.trusted = False
        """It carried the right token at least once: evicted only after every untrusted one."""

    def next_head(self) -> Request | None:
        """Give the parser the buffered bytes up to the end of the next head (never a byte of
        what follows it: a body is read only when asked for); the request once its head is
        complete, None while it is not. Raises `_Refusal` for a head that is refused."""
        parser = self.parser
        buf = self.buf
        if not parser.heads and buf:
            if self.tail:
                end = (self.tail + buf[:len(_HEAD_END)]).find(_HEAD_END)
                end = end - len(self.tail) if end >= 0 else buf.find(_HEAD_END)
            else:
                end = buf.find(_HEAD_END)
            n = len(buf) if end < 0 else end + len(_HEAD_END)
            if self.head_size + n > MAX_HEAD:
                raise _Refusal(431, f"the request head is larger than {MAX_HEAD} bytes")
            if n == len(buf):
                chunk = bytes(buf)
                buf.clear()
            else:
                chunk = bytes(buf[:n])
                del buf[:n]
            self.head_size += n
            self.tail = (self.tail + chunk)[-3:] if end < 0 else b""
            try:
                parser.llhttp.feed_data(chunk)
            except httptools.HttpParserUpgrade:
                # Upgrade or CONNECT: answered as any other request, then the connection closed
                # (llhttp reads nothing after it).
                for req in parser.heads:
                    req.keep_alive = False
            except httptools.HttpParserError as exc:
                raise _Refusal(400, f"bad request: {exc}") from None
        if not parser.heads:
            return None
        req = parser.heads.popleft()
        self.head_size = 0
        self.tail = b""
        if req.problem is not None:
            raise _Refusal(*req.problem)
        if req.version >= (2, 0):
            raise _Refusal(505, f"HTTP/{req.version[0]}.{req.version[1]} is not spoken here")
        if req.version < (1, 0):
            raise _Refusal(400, "HTTP/0.9 is not spoken here")
        return req

    def feed_body(self, req: Request, deadline: float) -> None:
        """Read `req`'s body (Content-Length framed) until the parser saw its end: first what is
        buffered, then from the socket until `deadline`. TimeoutError, EOFError (the peer
        closed) or OSError when it does not all arrive."""
        length = req.length or 0
        llhttp = self.parser.llhttp
        while not req.complete:
            if not self.buf:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("read deadline passed")
                self.sock.settimeout(remaining)
                data = self.sock.recv(65536)
                if not data:
                    raise EOFError(f"ended after {len(req.body)} of {length} bytes")
                self.buf += data
            n = min(len(self.buf), length - len(req.body))
            if n <= 0:
                raise OSError("body: the parser expects more than the declared length")
            chunk = bytes(self.buf[:n])
            del self.buf[:n]
            try:
                llhttp.feed_data(chunk)
            except httptools.HttpParserError as exc:
                raise OSError(f"body: {exc}") from None


_ARMED_READ = select.EPOLLIN | select.EPOLLONESHOT
_ARMED_WRITE = select.EPOLLOUT | select.EPOLLONESHOT


class TokenServer:
    """A server whose every request must carry `Authorization: Bearer <token>`.

    Same surface as the stdlib servers for the callers that matter (`serve_forever`,
    `shutdown`, `server_close`, `server_address`), with the limits described in the module.

    Threads: `serve_forever`'s thread accepts connections, enforces the connection cap and
    closes connections whose deadline passed; `workers` threads wait on one epoll set of the
    idle connections, each armed for one event (EPOLLONESHOT), so exactly one worker takes a
    connection that became readable: it reads what arrived without blocking and, once a head is
    complete, answers in the same thread, then re-arms the connection. No request is handed
    from thread to thread."""

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
        """The connections armed in the epoll set: no worker holds them."""
        self._epoll = select.epoll()
        self._stop_r, self._stop_w = socket.socketpair()
        self._stop_r.setblocking(False)
        # Not drained while stopping: every wait (the acceptor's, each worker's) returns, until
        # the last thread has left.
        self._epoll.register(self._stop_r.fileno(), select.EPOLLIN)
        self._threads: list[threading.Thread] = []
        self._live_workers = 0
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

    # -- the acceptor ------------------------------------------------------------------------

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._stopped.clear()
        with contextlib.suppress(OSError):
            self._stop_r.recv(4096)  # a previous run's stop
        self._threads = [w for w in self._threads if w.is_alive()]
        for i in range(self.workers - len(self._threads)):
            w = threading.Thread(target=self._work, name=f"{self.role}-worker_{i}", daemon=True)
            with self._lock:
                self._live_workers += 1
            w.start()
            self._threads.append(w)
        sel = selectors.DefaultSelector()
        sel.register(self.socket, selectors.EVENT_READ, None)
        sel.register(self._stop_r, selectors.EVENT_READ, self._stop_r)
        next_sweep = 0.0
        try:
            while not self._stop:
                for key, _events in sel.select(poll_interval):
                    if key.data is None:
                        self._accept()
                now = time.monotonic()
                if now >= next_sweep:
                    self._expire(now)
                    next_sweep = now + min(poll_interval, 0.5)
        finally:
            sel.close()
            self._stop = False
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop accepting and serving and wait until `serve_forever` returned (at once when it
        is not running); a request being answered is finished."""
        self._signal_stop()
        self._stopped.wait()
        for w in self._threads:
            w.join(0.5)
        self._threads = [w for w in self._threads if w.is_alive()]

    def server_close(self) -> None:
        """Release the listening socket and every connection; answers being written may fail."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            conns = list(self._conns.values())
            self._conns.clear()
            self._idle.clear()
        self._signal_stop()
        for c in conns:
            self._close_sock(c.sock)
        self.socket.close()
        with self._lock:
            if not self._live_workers:
                self._release()

    def _release(self) -> None:
        """(Lock held, server closed, no worker left.) What the workers waited on."""
        self._epoll.close()
        self._stop_r.close()
        self._stop_w.close()

    def _signal_stop(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            self._stop_w.send(b"x")

    def _accept(self) -> None:
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
                if len(self._conns) >= self.max_connections and not self._evict():
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
            conn = _Conn(sock, addr, now, self.header_timeout, self.tls is not None, self.write_timeout)
            with self._lock:
                if self._closed:
                    self._close_sock(sock)
                    return
                self._conns[sock.fileno()] = conn
                self._idle[sock.fileno()] = conn
                self._epoll.register(sock.fileno(), _ARMED_READ)

    def _evict(self) -> bool:
        """(Lock held.) Make room by closing an idle connection: one that never authenticated
        first, the one idle the longest among those; False when none is idle."""
        if not self._idle:
            return False
        victim = min(self._idle.values(), key=lambda c: (c.trusted, c.since))
        self._drop_locked(victim)
        return True

    def _expire(self, now: float) -> None:
        with self._lock:
            for conn in [c for c in self._idle.values() if c.expires <= now]:
                self._drop_locked(conn)

    def _drop_locked(self, conn: _Conn) -> None:
        """(Lock held.) Forget and close a connection (its descriptor may by now be another
        connection's only if it was closed already, so the entries are checked to be its own)."""
        fd = conn.sock.fileno()
        if self._conns.get(fd) is conn:
            del self._conns[fd]
            self._idle.pop(fd, None)
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(fd)
        self._close_sock(conn.sock)

    def _forget(self, conn: _Conn) -> None:
        """Forget and close a connection this worker holds."""
        with self._lock:
            self._drop_locked(conn)

    @staticmethod
    def _close_sock(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.close()

    # -- a worker ----------------------------------------------------------------------------

    def _work(self) -> None:
        try:
            self._work_until_stopped()
        finally:
            with self._lock:
                self._live_workers -= 1
                if self._closed and not self._live_workers:
                    self._release()

    def _work_until_stopped(self) -> None:
        stop_fd = self._stop_r.fileno()
        while not self._stop:
            try:
                events = self._epoll.poll(-1, 1)
            except InterruptedError:
                continue
            except (OSError, ValueError):
                return
            for fd, _ev in events:
                if fd == stop_fd:
                    return
                with self._lock:
                    conn = self._idle.pop(fd, None)  # an armed connection: now this worker's
                if conn is not None:
                    try:
                        self._ready(conn)
                    except Exception:
                        log.exception("%s: connection from %s failed", self.role, conn.addr[0])
                        self._forget(conn)

    def _arm(self, conn: _Conn, events: int = _ARMED_READ) -> None:
        """Give the connection back to the epoll set (its deadline already set)."""
        with self._lock:
            fd = conn.sock.fileno()
            if self._conns.get(fd) is not conn:
                self._close_sock(conn.sock)  # closed meanwhile (server_close)
                return
            self._idle[fd] = conn
            self._epoll.modify(fd, events)

    def _ready(self, conn: _Conn) -> None:
        """The connection became readable (or writable during a TLS handshake)."""
        if conn.handshaking and not self._handshake(conn):
            return
        was_empty = not conn.buf and not conn.head_size
        try:
            while len(conn.buf) <= MAX_HEAD:
                data = conn.sock.recv(65536)
                if not data:
                    self._forget(conn)
                    return
                conn.buf += data
                if len(data) < 65536 and not (isinstance(conn.sock, ssl.SSLSocket) and conn.sock.pending()):
                    break  # a short read: the socket is drained
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        except (OSError, ValueError):
            self._forget(conn)
            return
        if was_empty and conn.buf:
            # The head of a keep-alive connection's next request has its own deadline.
            conn.expires = time.monotonic() + self.header_timeout
        self._serve(conn)

    def _handshake(self, conn: _Conn) -> bool:
        """One step of the TLS handshake; True when it is complete."""
        assert isinstance(conn.sock, ssl.SSLSocket)
        try:
            conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._arm(conn)
            return False
        except ssl.SSLWantWriteError:
            self._arm(conn, _ARMED_WRITE)
            return False
        except (OSError, ValueError) as exc:
            log.info("%s: TLS handshake with %s failed: %s", self.role, conn.addr[0], exc)
            self._forget(conn)
            return False
        conn.handshaking = False
        return True

    def _serve(self, conn: _Conn) -> None:
        """Answer every complete request the connection has buffered, then re-arm it (or close
        it: after a refusal, a `Connection: close`, or while stopping)."""
        try:
            if conn.handler is None:
                conn.handler = self.handler_class.for_connection(conn, self)
            h = conn.handler
            while True:
                try:
                    req = conn.next_head()
                except _Refusal as refusal:
                    h.refuse(refusal.status, str(refusal))
                    break
                if req is None:
                    now = time.monotonic()
                    conn.since = now
                    conn.expires = now + (self.header_timeout if conn.buf or conn.head_size else self.idle_timeout)
                    if conn.sock.gettimeout() != 0.0:
                        conn.sock.setblocking(False)
                    self._arm(conn)
                    return
                conn.expires = float("inf")
                h.begin(req)
                if self.authorized(h.headers.get("Authorization")):
                    conn.trusted = h._authed = True
                    h.handle()
                    h.finish()
                else:
                    h.unauthorized()
                if h.close_connection or self._stop:
                    break
                if isinstance(conn.sock, ssl.SSLSocket) and conn.sock.pending():
                    # Decrypted bytes the epoll set cannot see.
                    conn.buf += conn.sock.recv(conn.sock.pending())
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


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


_STATUS_CODES = {400: "bad-request", 404: "not-found", 405: "method-not-allowed", 408: "timeout",
                 413: "too-large", 414: "uri-too-long", 431: "headers-too-large", 501: "not-implemented",
                 505: "http-version"}


class JsonHandler:
    """Answers the requests of one connection (the server calls `begin`, then `handle` once the
    token was checked, or `unauthorized`, or `refuse` for a head it will not serve). Replies are
    JSON objects; errors are `{"error": {"code", "message", "field"?}}`. Subclasses route in
    `handle`."""

    server: TokenServer
    protocol_version = "HTTP/1.1"
    _date: tuple[int, str] = (0, "")
    """The Date header of the current second (shared by the class: one assignment, thread-safe)."""

    def __init__(self, conn: _Conn, server: TokenServer) -> None:
        self.conn = conn
        self.server = server
        self.client_address = conn.addr
        self.command = ""
        self.path = "/"
        self.request_version = "HTTP/1.1"
        self.requestline = ""
        self.headers = Headers({})
        self.close_connection = True
        self._authed = False
        self._request: Request | None = None

    @classmethod
    def for_connection(cls, conn: _Conn, server: TokenServer) -> JsonHandler:
        return cls(conn, server)

    def begin(self, req: Request) -> None:
        self._request = req
        self._authed = False
        self.command = req.method
        target = req.target.decode("iso-8859-1")
        self.path = "/" + target.lstrip("/") if target.startswith("//") else target
        self.request_version = f"HTTP/{req.version[0]}.{req.version[1]}"
        self.requestline = f"{req.method} {target} {self.request_version}"
        self.headers = Headers(req.fields)
        self.close_connection = not req.keep_alive

    def handle(self) -> None:
        """Answer the current (authenticated) request."""
        raise NotImplementedError

    def finish(self) -> None:
        """After `handle`: nothing by default."""

    def unauthorized(self) -> None:
        # The body is never read: close the connection rather than drain it.
        self.close_connection = True
        self._error(401, "unauthorized", "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    def refuse(self, status: int, message: str) -> None:
        """A head that was not understood or is too large: its framing is not either, so answer
        and close."""
        self._request = None
        self.command = ""
        self.close_connection = True
        self.requestline = "(refused request head)"
        self._error(status, _STATUS_CODES.get(status, "bad-request"), message)

    def date_time_string(self) -> str:
        # Formatted once a second rather than for every reply.
        now = int(time.time())
        second, text = JsonHandler._date
        if second != now:
            text = email.utils.formatdate(now, usegmt=True)
            JsonHandler._date = (now, text)
        return text

    def address_string(self) -> str:
        return str(self.client_address[0])

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)

    def log_request(self, status: int) -> None:
        self.log_message('"%s" %s -', self.requestline, status)

    def _settle_body(self) -> None:
        """Before replying: a body the route did not read is drained when the caller is
        authenticated and it is small, else the connection is closed after the reply."""
        req = self._request
        if req is None or req.complete:
            return
        if not self._authed or "transfer-encoding" in req.fields or (req.length or 0) > MAX_BODY:
            self.close_connection = True
            return
        try:
            self.conn.feed_body(req, time.monotonic() + self.server.body_timeout)
        except (OSError, EOFError):
            self.close_connection = True

    def send_bytes(self, status: int, data: bytes, headers: dict[str, str] | None = None, *,
                   content_type: str = "application/json") -> None:
        """Every reply: the head written in one piece with the body, with no `Server` field (it
        would tell a scanner the software and its version)."""
        self._settle_body()
        self.log_request(status)
        lines = [f"{self.protocol_version} {status} {_phrase(status)}", f"Date: {self.date_time_string()}"]
        if status != 204:
            lines += [f"Content-Type: {content_type}", f"Content-Length: {len(data)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if self.close_connection:
            lines.append("Connection: close")
        body = data if status != 204 and self.command != "HEAD" else b""
        self.conn.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.send_bytes(status, json.dumps(body).encode(), headers)

    def _error(self, status: int, code: str, message: str, fld: str | None = None,
               headers: dict[str, str] | None = None) -> None:
        err: dict[str, Any] = {"code": code, "message": message}
        if fld is not None:
            err["field"] = fld
        if status == 503:
            headers = {**(headers or {}), "Retry-After": RETRY_AFTER}
        self._send(status, {"error": err}, headers)

    def _read_body(self) -> bytes | None:
        """The raw body, None without Content-Length. Refused unread when chunked or too big."""
        req = self._request
        assert req is not None and self._authed, "a body is read only after the token was checked"
        if "transfer-encoding" in req.fields:
            self.close_connection = True
            raise ValidationError("body", "chunked bodies are not accepted; send Content-Length")
        n = req.length
        if n is None:
            return None
        if n > MAX_BODY:
            self.close_connection = True
            raise ValidationError("body", f"must be at most {MAX_BODY} bytes")
        limit = self.server.body_timeout
        try:
            self.conn.feed_body(req, time.monotonic() + limit)
        except TimeoutError:
            self.close_connection = True
            raise ValidationError("body", f"not received within {limit:g} s") from None
        except (OSError, EOFError) as exc:
            self.close_connection = True
            raise ValidationError("body", str(exc)) from None
        return bytes(req.body)


H = TypeVar("H", bound=JsonHandler)


class Routes(Generic[H]):
    """A server's published routes: (method, path pattern) -> the function that answers. The
    one table a server routes by; `resolve` also says which methods a known path allows (405)."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., None]]] = []

    def add(self, method: str, pattern: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
        """Decorator: `fn(handler, *groups)` answers `method` on paths matching `pattern`."""
        compiled = re.compile(pattern)

        def register(fn: Callable[..., None]) -> Callable[..., None]:
            self._routes.append((method, compiled, fn))
            return fn

        return register

    def resolve(self, method: str, path: str) -> tuple[Callable[..., None] | None, tuple[str, ...], list[str]]:
        """(function, path groups, []) for a route; (None, (), allowed methods) otherwise (an
        empty list: no such path)."""
        allowed: list[str] = []
        for m, pattern, fn in self._routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if m == method:
                return fn, match.groups(), []
            allowed.append(m)
        return None, (), sorted(set(allowed))
