"""The shared HTTP plumbing (httpjson.py) under hostile clients, over real sockets, for both the
agent and the driver service: floods of idle and slow connections, every method, smuggled
bodies, stdlib refusals."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import requests

from cloudstack_storpool.agent.hostconfig import HostConfig
from cloudstack_storpool.agent.running import Context
from cloudstack_storpool.agent.server import AgentServer
from cloudstack_storpool.driver.context import DriverContext
from cloudstack_storpool.httpjson import TokenServer, is_loopback, serve_in_thread
from cloudstack_storpool.poolconfig import PoolsFile, PoolSpec, Secret
from cloudstack_storpool.service import make_server
from cloudstack_storpool.spconn import StorPoolConn

TOKEN = "hardening-token-0123456789"
AUTH = f"Authorization: Bearer {TOKEN}\r\n"


def _agent(tmp_path: Path) -> AgentServer:
    host = HostConfig(client_id=1, dev_root=str(tmp_path / "dev"), mount_root=str(tmp_path / "mnt"),
                      secondary_roots=(str(tmp_path),))

    def ctx() -> Context:
        return Context(host=host, conn=StorPoolConn("127.0.0.1", 1, "sp-tok", retries=0, timeout=1))

    return AgentServer(("127.0.0.1", 0), TOKEN, ctx)


def _service() -> TokenServer:
    pool = PoolSpec(host="127.0.0.1", port=1, token=Secret("pool-token-xyz"), template="ssd",
                    uuid="6a3e0c1e-58a6-4b0f-9f39-1b8e3c3f2a10", name="p1")
    none = cast(Any, None)
    ctx = DriverContext(pools=PoolsFile((pool,)), cloudstack=none, settings=none, agents=none)
    return make_server(ctx, TOKEN)


# Each server with the path of a cheap authenticated GET.
KINDS = {"agent": "/v1/jobs", "service": "/v1/health"}


@pytest.fixture(params=sorted(KINDS))
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[TokenServer, str]]:
    srv: TokenServer = _agent(tmp_path) if request.param == "agent" else _service()
    srv.header_timeout = 1.0
    srv.body_timeout = 1.0
    srv.idle_timeout = 2.0
    thread = serve_in_thread(srv)
    try:
        yield srv, KINDS[request.param]
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def _connect(srv: TokenServer) -> socket.socket:
    s = socket.create_connection(cast(tuple[str, int], srv.server_address[:2]), timeout=5)
    return s


def _read_response(s: socket.socket, buf: bytearray) -> tuple[int, dict[str, str], bytes]:
    """One HTTP response from `s` (status, lower-case headers, body); leftover bytes stay in buf."""
    while b"\r\n\r\n" not in buf:
        data = s.recv(65536)
        if not data:
            raise ConnectionError(f"closed before a full head: {bytes(buf)!r}")
        buf += data
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    n = int(headers.get("content-length", "0"))
    body = bytearray(rest)
    while len(body) < n:
        data = s.recv(65536)
        if not data:
            raise ConnectionError("closed mid-body")
        body += data
    buf[:] = body[n:]
    return status, headers, bytes(body[:n])


def _closed_by_peer(s: socket.socket, within: float) -> bool:
    s.settimeout(within)
    try:
        while True:
            data = s.recv(65536)
            if not data:
                return True
    except TimeoutError:
        return False
    except OSError:
        return True


def _get(srv: TokenServer, path: str) -> requests.Response:
    return requests.get(srv.url + path, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)


# -- read timeouts, a bounded pool, a connection cap ----------------------------------------------


def test_authenticated_callers_are_answered_during_a_flood_of_half_open_connections(
        server: tuple[TokenServer, str]) -> None:
    srv, path = server
    srv.max_connections = 64
    flood: list[socket.socket] = []
    try:
        for i in range(200):
            s = _connect(srv)
            # Half of them send nothing, half a head that never ends.
            if i % 2:
                s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n")
            flood.append(s)
        answered = [_get(srv, path).status_code for _ in range(20)]
        assert answered == [200] * 20
        # The cap held: the server never kept more than max_connections open.
        assert srv.open_connections() <= srv.max_connections
    finally:
        for s in flood:
            s.close()


def test_a_connection_that_never_finishes_its_head_is_closed_after_the_header_timeout(
        server: tuple[TokenServer, str]) -> None:
    srv, path = server
    silent = _connect(srv)
    dripping = _connect(srv)
    dripping.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\n")
    t0 = time.monotonic()
    assert _closed_by_peer(silent, 5)
    assert _closed_by_peer(dripping, 5)
    assert time.monotonic() - t0 < 4  # closed by the 1 s deadline, not by our own 5 s wait


def test_a_body_that_never_arrives_is_refused_and_the_worker_freed(server: tuple[TokenServer, str]) -> None:
    srv, _path = server
    s = _connect(srv)
    s.sendall(f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Type: application/json\r\n"
              "Content-Length: 100\r\n\r\n{\"com".encode())
    buf = bytearray()
    status, headers, _body = _read_response(s, buf)
    assert status in (400, 405)  # the service has no POST /v1/jobs: refused, its body never awaited
    assert headers.get("connection") == "close" or status == 400
    assert _closed_by_peer(s, 5)


def test_idle_keep_alive_connections_cost_no_worker(server: tuple[TokenServer, str]) -> None:
    srv, path = server
    # More idle keep-alive connections than workers: each still gets its next answer.
    socks = [_connect(srv) for _ in range(srv.workers * 2)]
    try:
        bufs = [bytearray() for _ in socks]
        for _ in range(2):
            for s in socks:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n".encode())
            for s, b in zip(socks, bufs, strict=True):
                assert _read_response(s, b)[0] == 200
    finally:
        for s in socks:
            s.close()


def test_pipelined_requests_are_all_answered_in_order(server: tuple[TokenServer, str]) -> None:
    srv, path = server
    s = _connect(srv)
    one = f"GET {path} HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n".encode()
    s.sendall(one * 3 + f"GET /nope HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n".encode())
    buf = bytearray()
    assert [_read_response(s, buf)[0] for _ in range(4)] == [200, 200, 200, 404]


# -- every method authenticated, errors in JSON, bodies never taken for requests ------------------


@pytest.mark.parametrize("method", ["HEAD", "PATCH", "OPTIONS", "PUT", "DELETE", "TRACE", "PROPFIND", "POST", "GET"])
def test_every_method_is_authenticated_first_and_answers_json(server: tuple[TokenServer, str], method: str) -> None:
    srv, path = server
    s = _connect(srv)
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    read = _read_response_head_only if method == "HEAD" else _read_response
    buf = bytearray()
    status, headers, body = read(s, buf)
    assert status == 401, method
    assert headers["www-authenticate"] == "Bearer"
    if method != "HEAD":
        assert json.loads(body)["error"]["code"] == "unauthorized"
    assert headers["content-type"] == "application/json"
    s.close()
    s = _connect(srv)
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n".encode())
    status, headers, body = read(s, bytearray())
    assert headers["content-type"] == "application/json"
    if method == "GET":
        assert status == 200
    elif method == "HEAD":
        assert status in (200, 405) and body == b""
    else:
        assert status in (400, 404, 405), method  # 400: the agent's POST /v1/jobs needs a body
        assert json.loads(body)["error"]["code"] in ("not-found", "method-not-allowed", "invalid")
        if status == 405:
            assert "GET" in headers["allow"]


def test_a_method_the_parser_does_not_know_is_refused_before_anything_else(server: tuple[TokenServer, str]) -> None:
    """A made-up method is not HTTP the parser can frame: 400 in JSON, the connection closed,
    nothing routed (with or without the token)."""
    srv, path = server
    for auth in ("", AUTH):
        s = _connect(srv)
        s.sendall(f"BREW {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode())
        status, headers, body = _read_response(s, bytearray())
        assert status == 400 and headers["connection"] == "close"
        assert json.loads(body)["error"]["code"] == "bad-request"
        assert _closed_by_peer(s, 5)


def test_head_keeps_the_connection_in_step(server: tuple[TokenServer, str]) -> None:
    srv, path = server
    s = _connect(srv)
    s.sendall(f"HEAD {path} HTTP/1.1\r\nHost: x\r\n{AUTH}\r\nGET {path} HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n".encode())
    buf = bytearray()
    status, _headers, _ = _read_response_head_only(s, buf)
    assert status in (200, 405)
    assert _read_response(s, buf)[0] == 200


def _read_response_head_only(s: socket.socket, buf: bytearray) -> tuple[int, dict[str, str], bytes]:
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    buf[:] = rest
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    return int(lines[0].split()[1]), headers, b""


def test_a_body_sent_to_an_unknown_path_is_not_parsed_as_the_next_request(server: tuple[TokenServer, str]) -> None:
    srv, path = server
    smuggled = f"DELETE /v1/jobs/{'0' * 32} HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n".encode()
    s = _connect(srv)
    s.sendall(f"POST /v1/nowhere HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Length: {len(smuggled)}\r\n\r\n".encode()
              + smuggled + f"GET {path} HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n".encode())
    buf = bytearray()
    first = _read_response(s, buf)
    assert first[0] == 404
    second = _read_response(s, buf)
    assert second[0] == 200  # the real next request, not the smuggled DELETE
    s.settimeout(0.5)
    with pytest.raises(TimeoutError):
        s.recv(1)  # and nothing more: the smuggled one was never answered


def test_an_unauthenticated_body_is_never_read_and_the_connection_closes(server: tuple[TokenServer, str]) -> None:
    srv, path = server
    smuggled = f"GET {path} HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n".encode()
    s = _connect(srv)
    s.sendall(f"POST /v1/nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: {len(smuggled)}\r\n\r\n".encode() + smuggled)
    buf = bytearray()
    status, headers, _ = _read_response(s, buf)
    assert status == 401 and headers["connection"] == "close"
    assert _closed_by_peer(s, 5)


@pytest.mark.parametrize("raw", [
    b"GET\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n",
])
def test_the_stdlib_refusals_are_json_too(server: tuple[TokenServer, str], raw: bytes) -> None:
    srv, _path = server
    s = _connect(srv)
    s.sendall(raw)
    status, headers, body = _read_response(s, bytearray())
    assert 400 <= status < 600
    assert headers["content-type"] == "application/json"
    assert "error" in json.loads(body)
    assert b"<html" not in body.lower()


@pytest.mark.parametrize("raw, status", [
    (b"GET / HTTP/2.0\r\n\r\n", 505),
    (b"GET / HTTQ/1.1\r\n\r\n", 400),
    (b"GET /\r\n\r\n", 400),  # HTTP/0.9 is not spoken
    (b"GET / HTTP/1.1\r\nno-colon\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nBad Name: 1\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),
    (b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", 431),
    (b"GET / HTTP/1.1\r\nX-A: " + b"b" * 70000 + b"\r\n\r\n", 431),
], ids=["http2", "bad-version", "http0.9", "no-colon", "folded", "space-in-name", "two-lengths",
        "too-many", "long-line"])
def test_the_head_parser_refuses_what_it_cannot_read_safely(server: tuple[TokenServer, str], raw: bytes,
                                                            status: int) -> None:
    srv, _path = server
    s = _connect(srv)
    s.sendall(raw)
    got, headers, body = _read_response(s, bytearray())
    assert got == status, body
    assert headers["connection"] == "close" and "error" in json.loads(body)
    assert _closed_by_peer(s, 5)


@pytest.mark.parametrize("version, connection, kept", [
    ("HTTP/1.1", "", True), ("HTTP/1.1", "close", False), ("HTTP/1.0", "", False),
    ("HTTP/1.0", "keep-alive", True), ("HTTP/1.1", "Keep-Alive", True),
])
def test_keep_alive_follows_the_version_and_connection_header(server: tuple[TokenServer, str], version: str,
                                                              connection: str, kept: bool) -> None:
    srv, path = server
    s = _connect(srv)
    extra = f"Connection: {connection}\r\n" if connection else ""
    s.sendall(f"GET {path} {version}\r\nhost: x\r\nAUTHORIZATION: Bearer {TOKEN}\r\n{extra}\r\n".encode())
    status, _headers, _body = _read_response(s, bytearray())
    assert status == 200  # header names are case-insensitive
    assert _closed_by_peer(s, 0.5) is not kept


def test_replies_name_no_server_software(server: tuple[TokenServer, str]) -> None:
    """No `Server: BaseHTTP/0.6 Python/3.x` (a version for scanners to match), on answers and
    on refusals alike; the metrics endpoint answers through the same one-write path."""
    srv, path = server
    for raw in (f"GET {path} HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n", "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                f"GET /metrics HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n"):
        s = _connect(srv)
        s.sendall(raw.encode())
        status, headers, body = _read_response(s, bytearray())
        assert "server" not in headers and "date" in headers, headers
        assert len(body) == int(headers["content-length"])
    assert status == 200 and headers["content-type"].startswith("text/plain") and b"cssp_" in body


def test_replies_are_one_segment_with_nagle_off(server: tuple[TokenServer, str]) -> None:
    srv, path = server
    s = _connect(srv)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n".encode())
    # The whole reply arrives in one recv: head and body were written together.
    s.settimeout(5)
    first = s.recv(65536)
    head, _, body = first.partition(b"\r\n\r\n")
    length = int(next(ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")))
    assert len(body) == length
    served = [c for c in srv._conns.values()]
    assert served and all(c.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for c in served)


def test_shutdown_while_clients_are_connected(tmp_path: Path) -> None:
    srv = _agent(tmp_path)
    t = serve_in_thread(srv)
    s = _connect(srv)
    s.sendall(b"GET /v1/jobs HTTP/1.1\r\n")
    done = threading.Event()

    def stop() -> None:
        srv.shutdown_all()
        done.set()

    threading.Thread(target=stop, daemon=True).start()
    assert done.wait(10)
    t.join(5)
    assert not t.is_alive()
    assert _closed_by_peer(s, 5)


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.1.2.3") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1") and not is_loopback("::")
    assert not is_loopback("example.com")


def test_at_the_cap_unauthenticated_connections_go_before_an_authenticated_one(server: tuple[TokenServer, str]) -> None:
    srv, path = server
    srv.max_connections = 16
    trusted = _connect(srv)
    trusted.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n".encode())
    buf = bytearray()
    assert _read_response(trusted, buf)[0] == 200
    flood = [_connect(srv) for _ in range(100)]  # each one past the cap evicts an idle one
    try:
        # The authenticated keep-alive connection, idle the longest, is still served.
        trusted.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n".encode())
        assert _read_response(trusted, buf)[0] == 200
    finally:
        for s in flood:
            s.close()
        trusted.close()


def test_a_request_head_is_bounded_in_bytes_not_only_in_lines(server: tuple[TokenServer, str]) -> None:
    srv, path = server
    s = _connect(srv)
    # 90 headers of 4 KiB: under the stdlib's 100-line limit, 360 KiB in all.
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode() + b"".join(
        f"X-Pad-{i}: {'a' * 4096}\r\n".encode() for i in range(90)) + b"\r\n")
    status, headers, _body = _read_response(s, bytearray())
    assert status == 431 and headers["content-type"] == "application/json"
    assert _closed_by_peer(s, 5)


# -- heads that two parsers could read two ways: refused, one answer, the connection closed ------

_NEXT = f"GET /v1/jobs HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n".encode()
"""A request following the hostile one: it must never be answered (one answer per connection)."""


@pytest.mark.parametrize("raw", [
    f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Length: +5\r\n\r\nhello".encode(),
    f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Length: 0_5\r\n\r\nhello".encode(),
    # A bare LF inside a CRLF head: a parser splitting on CRLF sees one field `X-A` and no length.
    f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\n{AUTH}X-A: b\nContent-Length: 5\r\n\r\nhello".encode(),
    f"GET /v1/jobs HTTP/1.1\r\nHost: x\r\n{AUTH}X-A: a\x00b\r\n\r\n".encode(),
    f"GET /v1/jobs HTTP/1.1\r\nHost: x\r\n{AUTH}X-A: a\rb\r\n\r\n".encode(),
    b"GET /v1/jobs\xa0 HTTP/1.1\r\nHost: x\r\n" + AUTH.encode() + b"\r\n",
    b"GET\xa0/v1/jobs HTTP/1.1\r\nHost: x\r\n" + AUTH.encode() + b"\r\n",
    f"GET /v1/jobs HTTP/01.01\r\nHost: x\r\n{AUTH}\r\n".encode(),
    f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".encode(),
    f"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nHost: y\r\n{AUTH}\r\n".encode(),
], ids=["length-plus", "length-underscore", "bare-lf", "nul-in-value", "bare-cr-in-value", "nbsp-in-target",
        "nbsp-after-method", "version-01.01", "length-and-chunked", "two-hosts"])
def test_ambiguous_heads_are_refused_with_one_answer(server: tuple[TokenServer, str], raw: bytes) -> None:
    srv, _path = server
    s = _connect(srv)
    s.sendall(raw + _NEXT)
    buf = bytearray()
    status, headers, body = _read_response(s, buf)
    assert status == 400, body
    assert headers["connection"] == "close" and headers["content-type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "bad-request"
    s.settimeout(5)
    rest = bytes(buf)
    while data := s.recv(65536):
        rest += data
    assert rest == b""  # closed, and the request behind it never answered


@pytest.mark.parametrize("token", [False, True])
def test_an_oversized_head_is_refused_when_its_bytes_are_there_not_at_the_deadline(
        server: tuple[TokenServer, str], token: bool) -> None:
    """67 KB of head with no blank line: 431 at once (the worker never waits for the rest), so a
    few such connections cannot hold the workers until the head deadline."""
    srv, path = server
    srv.header_timeout = 60.0  # far beyond the client's wait below
    s = _connect(srv)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{AUTH if token else ''}".encode()
              + b"".join(f"X-Pad-{i}: {'a' * 1000}\r\n".encode() for i in range(67)))
    status, headers, body = _read_response(s, bytearray())
    assert status == 431 and headers["connection"] == "close"
    assert json.loads(body)["error"]["code"] == "headers-too-large"
    assert _closed_by_peer(s, 5)


def test_a_head_whose_end_straddles_reads_is_read_once_and_its_body_not_before_the_token(
        server: tuple[TokenServer, str]) -> None:
    """The blank line split over several sends: the head is complete at the last byte, and the
    bytes after it (a body, here a whole request) are not taken for part of the head."""
    srv, path = server
    s = _connect(srv)
    head = f"GET {path} HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n".encode()
    for piece in (head[:-3], head[-3:-1], head[-1:] + head):
        s.sendall(piece)
        time.sleep(0.05)  # (separate reads on the server; the test asserts no timing)
    buf = bytearray()
    assert [_read_response(s, buf)[0] for _ in range(2)] == [200, 200]


def test_an_upgrade_request_is_answered_and_the_connection_closed(server: tuple[TokenServer, str]) -> None:
    """The parser reads nothing after an Upgrade: the request gets its answer, and whatever
    followed is never taken for a request."""
    srv, path = server
    s = _connect(srv)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{AUTH}Connection: upgrade\r\nUpgrade: h2c\r\n\r\n".encode() + _NEXT)
    buf = bytearray()
    status, headers, _body = _read_response(s, buf)
    assert status == 200 and headers["connection"] == "close"
    assert _closed_by_peer(s, 5) and not buf
