"""The StorPool wire transport (sptransport.py) against a scripted HTTP server on a real socket:
which answers let a connection carry the next call, how bodies are delimited, and that a
connection the server dropped is never used for a call."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from cloudstack_storpool import sptransport
from cloudstack_storpool.errors import SpUnreachable
from cloudstack_storpool.spconn import StorPoolConn
from cloudstack_storpool.sptransport import Transport

Reply = Callable[[bytes], bytes | None]
"""Request bytes -> reply bytes; None closes the connection without an answer."""


def ok(body: bytes = b'{"data": {"ok": true}}', extra: str = "") -> bytes:
    return (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
            .encode() + body)


class Scripted:
    """Answers requests in order from `replies` (the last one repeats); counts connections
    and keeps the requests it read. `close_after` closes a connection after that many answers."""

    def __init__(self, replies: list[bytes | None], close_after: int | None = None) -> None:
        self.replies = replies
        self.close_after = close_after
        self.connections = 0
        self.requests: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _next(self) -> bytes | None:
        with self._lock:
            i = len(self.requests) - 1
            return self.replies[min(i, len(self.replies) - 1)]

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        answered = 0
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = next((int(ln.split(b":")[1]) for ln in head.split(b"\r\n")
                               if ln.lower().startswith(b"content-length:")), 0)
                while len(buf) < length:
                    buf += conn.recv(65536)
                body, buf = buf[:length], buf[length:]
                with self._lock:
                    self.requests.append(head + b"\r\n\r\n" + body)
                reply = self._next()
                if reply is None:
                    return
                conn.sendall(reply)
                answered += 1
                if self.close_after is not None and answered >= self.close_after:
                    return

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def transport() -> Iterator[Transport]:
    t = Transport()
    yield t
    t.close()


def _get(t: Transport, srv: Scripted, path: str = "/ctrl/1.0/ServicesList") -> tuple[int, bytes]:
    return t.request("127.0.0.1", srv.port, "GET", path, {"Authorization": "Storpool v1:tok"}, None, timeout=5)


def test_calls_share_one_connection_while_the_server_keeps_it(transport: Transport) -> None:
    srv = Scripted([ok()])
    for _ in range(5):
        assert _get(transport, srv) == (200, b'{"data": {"ok": true}}')
    assert srv.connections == 1
    srv.close()


@pytest.mark.parametrize("reply", [
    ok(extra="Connection: close\r\n"),
    b'HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}',
], ids=["connection-close", "http-1.0"])
def test_an_answer_that_ends_its_connection_is_not_reused(transport: Transport, reply: bytes) -> None:
    srv = Scripted([reply], close_after=1)
    for _ in range(3):
        assert _get(transport, srv)[0] == 200
    assert srv.connections == 3
    srv.close()


def test_http_1_0_with_keep_alive_is_reused(transport: Transport) -> None:
    srv = Scripted([b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}"])
    for _ in range(3):
        assert _get(transport, srv) == (200, b"{}")
    assert srv.connections == 1
    srv.close()


def test_chunked_and_close_delimited_bodies(transport: Transport) -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\n{\"a\"\r\n3\r\n: 1\r\n1\r\n}\r\n0\r\nT: v\r\n\r\n"
    srv = Scripted([chunked, b"HTTP/1.1 200 OK\r\n\r\n{\"until\": \"close\"}"], close_after=None)
    assert _get(transport, srv) == (200, b'{"a": 1}')
    srv2 = Scripted([b"HTTP/1.1 200 OK\r\n\r\n{\"until\": \"close\"}"], close_after=1)
    assert _get(transport, srv2) == (200, b'{"until": "close"}')
    assert _get(transport, srv2) == (200, b'{"until": "close"}')
    assert srv2.connections == 2  # the body ran to the end of the connection
    srv.close()
    srv2.close()


def test_a_connection_the_server_closed_while_idle_is_replaced_not_used(transport: Transport) -> None:
    srv = Scripted([ok()], close_after=1)  # the server closes after each answer, without saying so
    for _ in range(4):
        assert _get(transport, srv)[0] == 200
        time.sleep(0.05)  # idle: the server's close arrives meanwhile
    assert srv.connections == 4
    assert len(srv.requests) == 4  # no call was lost on a dead connection
    srv.close()


def test_a_connection_idle_too_long_is_not_reused(transport: Transport, monkeypatch: pytest.MonkeyPatch) -> None:
    srv = Scripted([ok()])
    _get(transport, srv)
    monkeypatch.setattr(sptransport, "IDLE_REUSE", -1.0)
    _get(transport, srv)
    assert srv.connections == 2
    srv.close()


@pytest.mark.parametrize("reply, error", [
    (b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n", http.client.BadStatusLine),
    (b"SMTP ready\r\n\r\n", http.client.BadStatusLine),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", http.client.HTTPException),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", http.client.IncompleteRead),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", http.client.HTTPException),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", http.client.HTTPException),
    (None, http.client.RemoteDisconnected),
], ids=["short-status", "not-http", "bad-header", "truncated", "negative-length", "bad-chunk", "no-answer"])
def test_malformed_answers_raise_and_drop_the_connection(transport: Transport, reply: bytes | None,
                                                          error: type[Exception]) -> None:
    srv = Scripted([reply, ok()], close_after=1)
    with pytest.raises(error):
        _get(transport, srv)
    assert _get(transport, srv)[0] == 200
    assert srv.connections == 2
    srv.close()


def test_the_request_carries_method_path_auth_and_json_body(transport: Transport) -> None:
    srv = Scripted([ok()])
    transport.request("127.0.0.1", srv.port, "POST", "/ctrl/1.0/VolumeCreate", {"Authorization": "Storpool v1:t"},
                      b'{"size": 1}', timeout=5)
    head, _, body = srv.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /ctrl/1.0/VolumeCreate HTTP/1.1"
    assert b"Authorization: Storpool v1:t" in lines
    assert b"Content-Length: 11" in lines and body == b'{"size": 1}'
    srv.close()


def test_storpoolconn_calls_reuse_the_connection_and_map_failures() -> None:
    """Through the bindings: typed answers, one connection, and a dropped answer is
    SpUnreachable with the token nowhere in the message."""
    body = b'{"generation": 1, "data": [{"id": 1, "status": "running", "name": "x"}]}'
    srv = Scripted([ok(body)])
    conn = StorPoolConn("127.0.0.1", srv.port, "secret-token-abc", retries=0)
    for _ in range(3):
        conn.api.servicesList(returnRawAPIData=True)
    assert srv.connections == 1
    srv.close()
    dead = Scripted([None])
    conn = StorPoolConn("127.0.0.1", dead.port, "secret-token-abc", retries=0)
    with pytest.raises(SpUnreachable) as err:
        conn.volume_delete("vol-x")
    assert "secret-token-abc" not in str(err.value)
    dead.close()


def test_a_silent_server_times_out_within_the_call_timeout(transport: Transport) -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # listens, never answers
    port = silent.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        transport.request("127.0.0.1", port, "GET", "/ctrl/1.0/ServicesList", {}, None, timeout=0.3)
    assert 0.25 <= time.monotonic() - t0 < 3
    conn = StorPoolConn("127.0.0.1", port, "secret-token-abc", retries=0, timeout=0.3)
    with pytest.raises(SpUnreachable):
        conn.volume_delete("vol-x")
    silent.close()


def test_a_forked_child_does_not_inherit_the_parents_connections() -> None:
    import os

    srv = Scripted([ok()])
    t = sptransport.TRANSPORT
    _get(t, srv)
    assert srv.port in {k[1] for k in t._idle if t._idle[k]}
    pid = os.fork()
    if pid == 0:  # the child: no connection of the parent's left to send on
        os._exit(0 if not any(t._idle.values()) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    _get(t, srv)  # the parent's connection survived the child's close of its copy
    assert srv.connections == 1
    srv.close()


def test_connections_past_descriptor_1023_are_reused(transport: Transport) -> None:
    """A busy service holds more than 1,024 descriptors; the idle-close check must still work
    there (`select` cannot watch them)."""
    import os
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    srv = Scripted([ok()])
    filler = [os.dup(0) for _ in range(1100)]
    try:
        for _ in range(3):
            assert _get(transport, srv)[0] == 200
        held = [c for conns in transport._idle.values() for c in conns]
        assert held and held[0].sock.fileno() > 1023
        assert srv.connections == 1
    finally:
        for fd in filler:
            os.close(fd)
        srv.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
