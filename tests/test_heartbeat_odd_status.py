"""The heartbeat on odd and malformed StorPool answers, over real HTTP through the real
bindings: a client status the bindings do not know, `clients: null`, `data` a string, a client
without an id, an HTML error page, truncated JSON. Whatever it cannot read is Unknown with the
reason, in the host loop (which still writes a fresh status every round and still acts on the
rounds it can judge) and in the management-side check and `heartbeat status` alike."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cloudstack_storpool.heartbeat.check import CheckConfig, HeartbeatChecker, HostTarget
from cloudstack_storpool.heartbeat.cli import status_cmd
from cloudstack_storpool.heartbeat.hostloop import Action, HostLoop, LoopConfig, Result, read_status
from cloudstack_storpool.heartbeat.policy import Verdict
from cloudstack_storpool.poolconfig import PoolSpec, Secret
from cloudstack_storpool.spconn import StorPoolConn

TOKEN = "odd-status-token"


def client(cid: int, status: str) -> dict[str, Any]:
    return {"id": cid, "nodeId": cid, "status": status, "version": "21.0", "startTime": 1700000000}


def services(status: str = "running", **override: Any) -> str:
    data = {"clusterStatus": "running", "mgmt": {}, "servers": {}, "bridges": {}, "iscsiTargets": {},
            "clients": {"1": client(1, "running"), "2": client(2, status)}, **override}
    return json.dumps({"generation": 1, "data": data})


MALFORMED = {
    "clients null": (services(clients=None), "'clients' is NoneType"),
    "clients a list": (services(clients=[client(2, "running")]), "'clients' is NoneType"),
    "data a string": (json.dumps({"generation": 1, "data": "maintenance"}), "unreadable ServicesList answer"),
    "client without id": (services(clients={"2": {"nodeId": 2, "status": "running"}}), "has no integer id"),
    "html page": ("<html><body><h1>502 Bad Gateway</h1></body></html>", "unreadable ServicesList answer"),
    "truncated json": (services()[:57], "unreadable ServicesList answer"),
    "no data": (json.dumps({"generation": 1}), "unreadable ServicesList answer"),
}


class Scripted:
    """ServicesList answers one body after the other (the last repeats); ClientActiveRequests
    answers `requests` (a raw body)."""

    def __init__(self) -> None:
        self.bodies = [services()]
        self.requests = json.dumps({"generation": 1, "data": {"clientId": 2, "requests": []}})

    def answer(self, query: str) -> bytes:
        if query.startswith("ClientActiveRequests"):
            return self.requests.encode()
        body = self.bodies[0] if len(self.bodies) == 1 else self.bodies.pop(0)
        return body.encode()


@pytest.fixture
def storpool() -> Iterator[tuple[StorPoolConn, Scripted, int]]:
    script = Scripted()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            raw = script.answer(self.path.rsplit("/", 2)[-2 if self.path.count("/") > 3 else -1])
            self.send_response(200)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    port = int(server.server_address[1])
    try:
        yield StorPoolConn("127.0.0.1", port, TOKEN, retries=0, timeout=5), script, port
    finally:
        server.shutdown()
        server.server_close()


def loop_of(conn: StorPoolConn, tmp_path: Path, action: Action, reboots: list[str] | None = None) -> HostLoop:
    config = LoopConfig(client_id=2, interval=0.01, max_failures=2, action=action, status_file=tmp_path / "hb.json")
    return HostLoop(conn, config, alert=lambda s: None, reboot=(reboots if reboots is not None else []).append)


def test_an_unknown_client_status_never_leads_to_a_reboot(storpool: tuple[StorPoolConn, Scripted, int],
                                                          tmp_path: Path) -> None:
    conn, script, _ = storpool
    reboots: list[str] = []
    loop = loop_of(conn, tmp_path, Action.REBOOT, reboots)
    assert loop.round().result is Result.OK
    script.bodies = [services("restarting")]  # not a status the bindings know
    for _ in range(4):
        assert loop.round().result is Result.UNKNOWN
    assert reboots == []
    script.bodies = [services("down")]  # a status the cluster really reports: counted
    loop.round()
    loop.round()
    assert len(reboots) == 1


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_answer_is_unknown_with_its_reason_and_a_fresh_status(
        storpool: tuple[StorPoolConn, Scripted, int], tmp_path: Path, case: str) -> None:
    conn, script, _ = storpool
    body, reason = MALFORMED[case]
    times = iter([1000.0, 2000.0])
    loop = HostLoop(conn, LoopConfig(client_id=2, interval=0.01, status_file=tmp_path / "hb.json"),
                    alert=lambda s: None, clock=lambda: next(times))
    assert loop.round().result is Result.OK
    script.bodies = [body]
    state = loop.round()
    assert state.result is Result.UNKNOWN and reason in state.reason, state.reason
    written = read_status(tmp_path / "hb.json")
    assert written is not None
    assert (written["result"], written["time"]) == ("unknown", 2000.0)  # not the previous round's ok
    assert reason in written["reason"]


def test_the_action_still_runs_for_the_rounds_it_can_judge(storpool: tuple[StorPoolConn, Scripted, int],
                                                           tmp_path: Path) -> None:
    conn, script, _ = storpool
    reboots: list[str] = []
    loop = loop_of(conn, tmp_path, Action.REBOOT, reboots)
    html = MALFORMED["html page"][0]
    script.bodies = [services("down"), html, services("down"), services("down")]
    results = [loop.round().result for _ in range(4)]
    assert results == [Result.FAIL, Result.UNKNOWN, Result.FAIL, Result.FAIL]
    assert len(reboots) == 1  # the two judged "down" rounds after the unreadable one
    logged = loop_of(conn, tmp_path, Action.LOG)
    script.bodies = [services(), html, MALFORMED["clients null"][0]]
    for _ in range(3):
        logged.round()
    assert logged.state.last_action == "log"  # unreadable rounds are rounds that were not ok


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_the_management_check_and_status_command_say_unknown(
        storpool: tuple[StorPoolConn, Scripted, int], tmp_path: Path, case: str) -> None:
    _, script, port = storpool
    body, reason = MALFORMED[case]
    script.bodies = [body]
    pool = PoolSpec(host="127.0.0.1", port=port, token=Secret(TOKEN), template="ssd",
                    uuid="0b6c4a52-0000-4000-8000-00000000000a", name="pool-a", zone="z")
    verdict = HeartbeatChecker([pool], CheckConfig(io_window=0, io_samples=1)).check([HostTarget("h2", 2)])[0]
    assert verdict.verdict is Verdict.UNKNOWN and reason in verdict.pools[0].reason
    pools_file = tmp_path / "pools.toml"
    pools_file.write_text(f'[[pool]]\nuuid = "{pool.uuid}"\nname = "pool-a"\nzone = "z"\n'
                          f'url = "SP_API_HTTP=127.0.0.1:{port};SP_AUTH_TOKEN={TOKEN};SP_TEMPLATE=ssd"\n')
    pools_file.chmod(0o600)
    out = CliRunner().invoke(status_cmd, ["--pools", str(pools_file), "--client-ids", "2", "--json"])
    assert out.exit_code == 0, out.output
    host = json.loads(out.output)["hosts"][0]
    assert host["verdict"] == "unknown", host


def test_an_unreadable_active_requests_answer_is_no_evidence_of_death(
        storpool: tuple[StorPoolConn, Scripted, int]) -> None:
    _, script, port = storpool
    script.bodies = [services("down")]
    pool = PoolSpec(host="127.0.0.1", port=port, token=Secret(TOKEN), template="ssd",
                    uuid="0b6c4a52-0000-4000-8000-00000000000a", name="pool-a", zone="z")
    checker = HeartbeatChecker([pool], CheckConfig(io_window=0, io_samples=1))
    assert checker.check([HostTarget("h2", 2)])[0].verdict is Verdict.DEAD  # the readable baseline
    truncated = json.dumps({"generation": 1, "data": {"clientId": 2, "requests": [{"volume": "v"}]}})[:50]
    for raw in ("<html>oops</html>", truncated):
        script.requests = raw
        verdict = checker.check([HostTarget("h2", 2)])[0]
        assert verdict.verdict is Verdict.UNKNOWN and "unreadable ClientActiveRequests" in verdict.pools[0].reason


NO_REQUESTS_FIELD = {
    "requests missing": json.dumps({"generation": 1, "data": {"clientId": 2}}),
    "requests null": json.dumps({"generation": 1, "data": {"clientId": 2, "requests": None}}),
    "request without volume": json.dumps({"generation": 1, "data": {"clientId": 2, "requests": [{"op": "write"}]}}),
}


@pytest.mark.parametrize("case", sorted(NO_REQUESTS_FIELD))
def test_active_requests_without_their_list_are_unknown_not_no_io(
        storpool: tuple[StorPoolConn, Scripted, int], tmp_path: Path, case: str) -> None:
    """The bindings filled a missing `requests` with an empty list: a client the cluster lists
    as down looked idle, and the check called it dead. Every reader says it cannot tell."""
    conn, script, port = storpool
    script.bodies = [services("down")]
    pool = PoolSpec(host="127.0.0.1", port=port, token=Secret(TOKEN), template="ssd",
                    uuid="0b6c4a52-0000-4000-8000-00000000000a", name="pool-a", zone="z")
    checker = HeartbeatChecker([pool], CheckConfig(io_window=0, io_samples=1))
    loop = loop_of(conn, tmp_path, Action.LOG)
    assert checker.check([HostTarget("h2", 2)])[0].verdict is Verdict.DEAD  # the readable baseline: no I/O
    assert loop.idle() is True
    script.requests = NO_REQUESTS_FIELD[case]
    verdict = checker.check([HostTarget("h2", 2)])[0]
    assert verdict.verdict is Verdict.UNKNOWN, verdict
    assert "malformedAnswer" in verdict.pools[0].reason and "data.requests" in verdict.pools[0].reason
    assert loop.idle() is None
    assert loop.round().idle is None
    activity = checker.vm_activity(HostTarget("h2", 2), ["v"], window=0, samples=1)
    assert activity.active is None and "data.requests" in activity.reason


def test_vm_activity_on_an_unreadable_answer_is_none_not_a_crash(storpool: tuple[StorPoolConn, Scripted, int]) -> None:
    _, script, port = storpool
    pool = PoolSpec(host="127.0.0.1", port=port, token=Secret(TOKEN), template="ssd",
                    uuid="0b6c4a52-0000-4000-8000-00000000000a", name="pool-a", zone="z")
    checker = HeartbeatChecker([pool], CheckConfig(io_window=0, io_samples=1))
    script.requests = json.dumps({"generation": 1, "data": {"clientId": 2, "requests": [{"volume": "v"}]}})
    assert checker.vm_activity(HostTarget("h2", 2), ["v"], window=0, samples=1).active is True
    script.requests = "<html>oops</html>"
    activity = checker.vm_activity(HostTarget("h2", 2), ["v"], window=0, samples=1)
    assert activity.active is None and "unreadable ClientActiveRequests" in activity.reason
