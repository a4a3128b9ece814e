"""The HTTP plumbing shared by the KVM agent's API (agent/server.py) and the driver service's
(service/app.py): a bounded server behind one bearer token, JSON in and out.

Both face the same threats, so they share one implementation of the defences:

* A connection costs a worker thread only while a complete request is being answered. Idle
  connections wait in one epoll set, each armed for a single event; the worker that takes an
  event reads what arrived without blocking (or steps the TLS handshake) and re-arms the
  connection, and answers in that same thread once the head's blank line has arrived, so a
  request is never passed between threads. Half-open or slow-drip connections therefore hold
  a file descriptor, never a thread. One more thread accepts, caps and expires connections.
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

Routes and error mapping stay with each server. `BaseHTTPRequestHandler` still runs each
request (`handle_one_request`, `do_<METHOD>`, replies); its connection loop is replaced, and so
is its request-head parser, which ran the `email` package over every head (`parse_request`
here keeps its answers: 400, 431, 505, `Connection` and HTTP/1.0 rules).
"""

from __future__ import annotations

import contextlib
import hmac
import http.client
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
from collections.abc import Iterator
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
    """The request side of one connection: a buffer filled without blocking while the head
    arrives, then read by the worker with a deadline (total for the phase, not per `recv`)."""

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

    def take_head_lines(self) -> list[str] | None:
        """After the request line: the rest of the head as lines, if it is all buffered with
        CRLF line ends; None otherwise (the caller reads line by line)."""
        if self.buf.startswith(b"\r\n"):
            del self.buf[:2]
            return []
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        self.head_left -= end + 4
        if self.head_left < 0:
            raise http.client.LineTooLong("request head")
        text = self.buf[:end].decode("iso-8859-1")
        del self.buf[:end + 4]
        return text.split("\r\n")

    def has_head(self) -> bool:
        return _HEAD_END.search(self.buf) is not None or (self.buf.startswith((b"\r\n", b"\n")))


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

    def flush(self) -> None:
        pass


class _Conn:
    """One client connection: armed in the epoll set while idle (waiting for bytes), held by
    exactly one worker while it reads or answers."""

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
            conn = _Conn(sock, addr, now, self.header_timeout, self.tls is not None)
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
        reader = conn.reader
        was_empty = not reader.buf
        try:
            while len(reader.buf) <= MAX_HEAD:
                data = conn.sock.recv(65536)
                if not data:
                    self._forget(conn)
                    return
                reader.buf += data
                if len(data) < 65536 and not (isinstance(conn.sock, ssl.SSLSocket) and conn.sock.pending()):
                    break  # a short read: the socket is drained
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        except (OSError, ValueError):
            self._forget(conn)
            return
        if was_empty and reader.buf:
            # The head of a keep-alive connection's next request has its own deadline.
            conn.expires = time.monotonic() + self.header_timeout
        if reader.has_head() or len(reader.buf) > MAX_HEAD:
            # (An oversized head is answered too: 431, then the connection is closed.)
            conn.expires = float("inf")
            self._serve(conn)
        else:
            self._arm(conn)

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
        """Answer every complete request the connection has buffered, then re-arm it."""
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
                if isinstance(conn.sock, ssl.SSLSocket) and conn.sock.pending():
                    # Decrypted bytes the epoll set cannot see.
                    conn.reader.buf += conn.sock.recv(conn.sock.pending())
                if not conn.reader.has_head():
                    now = time.monotonic()
                    conn.since = now
                    conn.expires = now + (self.header_timeout if conn.reader.buf else self.idle_timeout)
                    if conn.sock.gettimeout() != 0.0:
                        conn.sock.setblocking(False)
                    self._arm(conn)
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


_HTTP_VERSION = re.compile(r"HTTP/(\d{1,10})\.(\d{1,10})")
_MAX_HEADERS = 100
_FIELD_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""RFC 9110 token: no spaces (and so no folded continuation lines)."""
_SINGLE = frozenset({"content-length", "transfer-encoding", "authorization", "host"})
"""Fields a request may carry once: two differing framings are how requests get smuggled."""


class Headers:
    """A request's header fields by lower-cased name (the first of repeated ones), read with
    `get` the way the stdlib's message object is."""

    __slots__ = ("_fields",)

    def __init__(self, fields: dict[str, str]) -> None:
        self._fields = fields

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._fields.get(name.lower(), default)


def _header_lines(rfile: Any) -> Iterator[str]:
    """The head's field lines, without line ends: at once from the buffer when the whole head
    is there (the usual case: a worker starts on a complete head), else line by line."""
    if isinstance(rfile, _Reader):
        lines = rfile.take_head_lines()
        if lines is not None:
            yield from lines
            return
    while True:
        raw = rfile.readline(65537)
        if len(raw) > 65536:
            raise http.client.LineTooLong("header line")
        if raw in (b"\r\n", b"\n", b""):
            return
        yield raw.decode("iso-8859-1").rstrip("\r\n")


def _read_headers(rfile: Any) -> Headers:
    """Header fields up to the blank line; LineTooLong or HTTPException for what the stdlib
    answers 431, ValueError for a line that is not a field (400)."""
    fields: dict[str, str] = {}
    for n, text in enumerate(_header_lines(rfile)):
        if n >= _MAX_HEADERS:
            raise http.client.HTTPException(f"got more than {_MAX_HEADERS} headers")
        if len(text) > 65536:
            raise http.client.LineTooLong("header line")
        name, sep, value = text.partition(":")
        if not sep or _FIELD_NAME.fullmatch(name) is None:
            raise ValueError(f"Bad header line ({text[:60]!r})")
        key = name.lower()
        value = value.strip()
        if key in fields:
            if key in _SINGLE and fields[key] != value:
                raise ValueError(f"Conflicting {name} headers")
            continue
        fields[key] = value
    return Headers(fields)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


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
        """The stdlib's request-line rules and answers, with the header fields read into a
        plain mapping (`Headers`) instead of through the `email` parser."""
        self._authed = False
        self._body_done = True
        self.command = None  # type: ignore[assignment]
        self.request_version = self.default_request_version
        self.close_connection = True
        self.requestline = line = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = line.split()
        if not words:
            return False
        if len(words) != 3:
            what = "HTTP/0.9 request" if len(words) == 2 else "request syntax"
            self.send_error(HTTPStatus.BAD_REQUEST, f"Bad {what} ({line[:100]!r})")
            return False
        command, path, version = words
        number = _HTTP_VERSION.fullmatch(version)
        if number is None:
            self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request version ({version[:30]!r})")
            return False
        if (int(number[1]), int(number[2])) >= (2, 0):
            self.send_error(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, f"Invalid HTTP version ({version[5:]})")
            return False
        self.request_version = version
        self.close_connection = (int(number[1]), int(number[2])) < (1, 1)
        self.command, self.path = command, "/" + path.lstrip("/") if path.startswith("//") else path
        try:
            self.headers = _read_headers(self.rfile)  # type: ignore[assignment]
        except http.client.LineTooLong as err:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long", str(err))
            return False
        except http.client.HTTPException as err:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers", str(err))
            return False
        except ValueError as err:
            self.send_error(HTTPStatus.BAD_REQUEST, str(err))
            return False
        connection = (self.headers.get("Connection") or "").lower()
        if connection == "close":
            self.close_connection = True
        elif connection == "keep-alive":
            self.close_connection = False
        # (Expect: 100-continue is not answered: see handle_expect_100.)
        self._body_done = not (self.headers.get("Content-Length") or self.headers.get("Transfer-Encoding"))
        return True

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

    def send_bytes(self, status: int, data: bytes, headers: dict[str, str] | None = None, *,
                   content_type: str = "application/json") -> None:
        """Every reply: the head written here in one piece with the body (the stdlib's
        `send_response`/`send_header` build it a line at a time and add a `Server` header naming
        the Python version, which tells a scanner nothing it should know)."""
        self._settle_body()
        self.log_request(status)
        lines = [f"{self.protocol_version} {status} {_phrase(status)}", f"Date: {self.date_time_string()}"]
        if status != 204:
            lines += [f"Content-Type: {content_type}", f"Content-Length: {len(data)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if self.close_connection:
            lines.append("Connection: close")
        body = data if status != 204 and getattr(self, "command", None) != "HEAD" else b""
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

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
