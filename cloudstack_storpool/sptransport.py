"""How a StorPool API call travels: HTTP/1.1 over connections kept open between calls.

The bindings' own transport (`storpool.spapi.Api.__call__`) opens a TCP connection for every
call and reads the answer's head with the stdlib's `email` parser. For a driver service that
makes many small calls, connecting and that parsing cost more CPU than the rest of the call, on
both ends (the API server, too, sets up a handler for every connection). `spconn._CountingApi`
sends its calls through `Transport` instead; the bindings stay in charge of everything else
(argument checks, typed answers, `ApiError`).

A connection is reused only when that cannot make a call ambiguous:

* one idle longer than `IDLE_REUSE` seconds is closed, not reused: far below any server's
  keep-alive timeout, so the server does not close a connection as a call is sent on it;
* one the server has closed meanwhile (readable before a request was sent) is replaced;
* an answer with `Connection: close`, from HTTP/1.0 without keep-alive, with a body delimited by
  the end of the connection, or followed by unexpected bytes ends its connection.

Nothing is re-sent here: a call that fails on the wire raises as the bindings' transport did
(`OSError` or `http.client.HTTPException`), and `spconn`'s lookups and retries decide.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import struct
import threading
import time
from collections.abc import Mapping

IDLE_REUSE = 2.0
"""Seconds a connection may sit idle and still be reused."""
MAX_IDLE_PER_ENDPOINT = 64
MAX_HEAD = 64 << 10

Key = tuple[str, int, "tuple[str, int] | None"]


class _Conn:
    """A blocking socket whose reads and writes the kernel times out (SO_RCVTIMEO and
    SO_SNDTIMEO): one system call per read or write, where a Python socket timeout adds a poll
    before each, and no mode switch per call."""

    __slots__ = ("buf", "sock", "timeout", "used")

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.used = time.monotonic()
        self.timeout = -1.0
        sock.settimeout(None)
        self.set_timeout(timeout)

    def set_timeout(self, timeout: float) -> None:
        if timeout != self.timeout:
            # A zero timeval means "wait forever" to the kernel: no timeout at all fails at once.
            sec = int(max(timeout, 1e-3))
            value = struct.pack("ll", sec, int((max(timeout, 1e-3) - sec) * 1e6))
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
            self.timeout = timeout

    def _recv(self) -> bytes:
        try:
            return self.sock.recv(65536)
        except BlockingIOError:  # SO_RCVTIMEO ran out
            raise TimeoutError("timed out waiting for the StorPool API") from None

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except BlockingIOError:  # SO_SNDTIMEO ran out
            raise TimeoutError("timed out sending to the StorPool API") from None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def dropped(self) -> bool:
        """Readable before a request was sent: the peer closed (or sent something unasked).
        A peek that does not wait (not `select`, which cannot watch descriptors past 1023)."""
        try:
            self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:
            return True
        return True

    def _fill(self) -> None:
        chunk = self._recv()
        if not chunk:
            raise http.client.RemoteDisconnected("StorPool API closed the connection without an answer"
                                                 if not self.buf else "StorPool API answer cut short")
        self.buf += chunk

    def read_until(self, delimiter: bytes, what: str) -> bytes:
        """What comes before `delimiter` (which is consumed), at most MAX_HEAD bytes."""
        while True:
            end = self.buf.find(delimiter)
            if end >= 0:
                out = bytes(self.buf[:end])
                del self.buf[:end + len(delimiter)]
                return out
            if len(self.buf) > MAX_HEAD:
                raise http.client.LineTooLong(f"StorPool API {what}")
            self._fill()

    def read_exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            try:
                self._fill()
            except http.client.RemoteDisconnected:
                raise http.client.IncompleteRead(bytes(self.buf), n - len(self.buf)) from None
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def read_to_end(self) -> bytes:
        while True:
            chunk = self._recv()
            if not chunk:
                data = bytes(self.buf)
                self.buf.clear()
                return data
            self.buf += chunk

    def read_chunked(self) -> bytes:
        out = bytearray()
        while True:
            size_text = self.read_until(b"\r\n", "chunk size").split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise http.client.HTTPException(f"StorPool API sent a bad chunk size {size_text[:20]!r}") from None
            if size == 0:
                while self.read_until(b"\r\n", "trailer"):  # up to the blank line
                    pass
                return bytes(out)
            out += self.read_exactly(size)
            if self.read_exactly(2) != b"\r\n":
                raise http.client.HTTPException("StorPool API sent a chunk without its CRLF")


def _parse_head(head: bytes) -> tuple[int, bool, dict[bytes, bytes]]:
    """Status, whether the version is 1.1, and the header fields (names lower-cased)."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3 or not parts[1].isdigit():
        raise http.client.BadStatusLine(lines[0][:80].decode("latin-1"))
    fields: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise http.client.HTTPException(f"StorPool API sent a malformed header line {line[:80]!r}")
        fields[name.lower()] = value.strip()
    return int(parts[1]), parts[0] == b"HTTP/1.1", fields


class Transport:
    """Connections to StorPool API endpoints, shared by every thread of the process; a
    connection serves one call at a time and goes back to its endpoint's idle list after it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[Key, list[_Conn]] = {}
        self._next_sweep = 0.0

    def request(self, host: str, port: int, method: str, path: str, headers: Mapping[str, str],
                body: bytes | None, *, timeout: float, source: tuple[str, int] | None = None) -> tuple[int, bytes]:
        """One call: the answer's status and body."""
        key: Key = (host, port, source)
        conn = self._take(key) or _Conn(_connect(host, port, timeout, source), timeout)
        try:
            conn.set_timeout(timeout)
            conn.send(_request_bytes(method, path, host, port, headers, body))
            status, keep, data = _read_answer(conn)
        except BaseException:
            conn.close()
            raise
        if keep and not conn.buf:
            self._give_back(key, conn)
        else:
            conn.close()
        return status, data

    def close(self) -> None:
        """Close every idle connection (a process about to exit or fork)."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for c in conns:
                c.close()

    def _after_fork(self) -> None:
        """In a forked child: none of the parent's connections (an answer could go to either
        process), and a fresh lock (another thread may have held it at the fork)."""
        self._lock = threading.Lock()
        self.close()  # the child's copies of the descriptors; the parent's stay open

    def _take(self, key: Key) -> _Conn | None:
        now = time.monotonic()
        stale: list[_Conn] = []
        found: _Conn | None = None
        with self._lock:
            if now >= self._next_sweep:
                self._next_sweep = now + IDLE_REUSE
                for k, all_idle in self._idle.items():
                    stale += [c for c in all_idle if now - c.used > IDLE_REUSE]
                    self._idle[k] = [c for c in all_idle if now - c.used <= IDLE_REUSE]
            idle = self._idle.get(key)
            while idle and found is None:
                c = idle.pop()
                if now - c.used > IDLE_REUSE:
                    stale.append(c)
                else:
                    found = c
        for c in stale:
            c.close()
        if found is not None and found.dropped():
            found.close()
            return None
        return found

    def _give_back(self, key: Key, conn: _Conn) -> None:
        conn.used = time.monotonic()
        with self._lock:
            conns = self._idle.setdefault(key, [])
            if len(conns) < MAX_IDLE_PER_ENDPOINT:
                conns.append(conn)
                return
        conn.close()


def _connect(host: str, port: int, timeout: float, source: tuple[str, int] | None) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout, source_address=source)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _request_bytes(method: str, path: str, host: str, port: int, headers: Mapping[str, str],
                   body: bytes | None) -> bytes:
    host_field = f"[{host}]" if ":" in host else host
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host_field}:{port}", "Accept-Encoding: identity"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    elif method in ("POST", "PUT", "PATCH"):
        lines.append("Content-Length: 0")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body if body else head


def _read_answer(conn: _Conn) -> tuple[int, bool, bytes]:
    """Status, whether the connection may carry another call, and the body."""
    while True:
        status, http11, fields = _parse_head(conn.read_until(b"\r\n\r\n", "answer head"))
        if status >= 200:
            break  # 1xx interim answers (never asked for) are skipped
    connection = fields.get(b"connection", b"").lower()
    keep = b"close" not in connection if http11 else b"keep-alive" in connection
    if status in (204, 304):
        return status, keep, b""
    if b"chunked" in fields.get(b"transfer-encoding", b"").lower():
        return status, keep, conn.read_chunked()
    length = fields.get(b"content-length")
    if length is None:
        return status, False, conn.read_to_end()
    if not length.isdigit():
        raise http.client.HTTPException(f"StorPool API sent a bad Content-Length {length[:20]!r}")
    return status, keep, conn.read_exactly(int(length))


TRANSPORT = Transport()
"""The process's connections (one pool, whatever the number of `StorPoolConn` objects)."""
os.register_at_fork(after_in_child=TRANSPORT._after_fork)
