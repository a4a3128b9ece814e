"""The host loop and the management check judge one ServicesList by the same first look: a
client status the bindings do not know (they keep a partial object rather than fail) is "cannot
tell", which never counts toward a reboot."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cloudstack_storpool.heartbeat.hostloop import Action, HostLoop, LoopConfig, Result
from cloudstack_storpool.spconn import StorPoolConn

TOKEN = "odd-status-token"


def services(status: str) -> dict[str, Any]:
    client = {"id": 2, "nodeId": 2, "status": status, "version": "21.0", "startTime": 1700000000}
    other = {"id": 1, "nodeId": 1, "status": "running", "version": "21.0", "startTime": 1700000000}
    return {"clusterStatus": "running", "mgmt": {}, "servers": {}, "bridges": {}, "iscsiTargets": {},
            "clients": {"1": other, "2": client}}


@pytest.fixture
def storpool() -> Iterator[tuple[StorPoolConn, list[str]]]:
    status = ["running"]

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            raw = json.dumps({"generation": 1, "data": services(status[0])}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield StorPoolConn("127.0.0.1", server.server_address[1], TOKEN, retries=0, timeout=5), status
    finally:
        server.shutdown()
        server.server_close()


def test_an_unknown_client_status_never_leads_to_a_reboot(storpool: tuple[StorPoolConn, list[str]],
                                                          tmp_path: Path) -> None:
    conn, status = storpool
    reboots: list[str] = []
    loop = HostLoop(conn, LoopConfig(client_id=2, interval=0.01, max_failures=2, action=Action.REBOOT,
                                     status_file=tmp_path / "hb.json"), alert=lambda s: None, reboot=reboots.append)
    assert loop.round().result is Result.OK
    status[0] = "restarting"  # not a status the bindings know
    for _ in range(4):
        assert loop.round().result is Result.UNKNOWN
    assert reboots == []
    status[0] = "down"  # a status the cluster really reports: counted
    loop.round()
    loop.round()
    assert len(reboots) == 1
