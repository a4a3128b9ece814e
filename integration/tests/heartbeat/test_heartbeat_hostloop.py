"""The per-host loop against the emulator: counters, status file, and above all the reboot guard."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from cloudstack_storpool.heartbeat.hostloop import Action, HostLoop, LoopConfig, Result, read_status
from cloudstack_storpool.spconn import StorPoolConn
from integration.storpool_sim.testing import EmulatorHandle
from integration.tests.heartbeat.conftest import heartbeat_process
from integration.tests.heartbeat.support import dead_port

TINY = 0.01


def conn_to(sp: EmulatorHandle) -> StorPoolConn:
    return StorPoolConn(sp.host, sp.port, sp.token, timeout=2.0, retries=0)


def unreachable_conn() -> StorPoolConn:
    return StorPoolConn("127.0.0.1", dead_port(), "nope", timeout=1.0, retries=0)


class Hooks:
    def __init__(self) -> None:
        self.reboots: list[str] = []
        self.alerts: list[str] = []

    def reboot(self, reason: str) -> None:
        self.reboots.append(reason)

    def alert(self, subject: str) -> None:
        self.alerts.append(subject)


def make_loop(conn: StorPoolConn, tmp_path: Path, hooks: Hooks, action: Action, client: int = 2,
              n: int = 3) -> HostLoop:
    cfg = LoopConfig(client_id=client, interval=TINY, max_failures=n, action=action,
                     status_file=tmp_path / "run" / "heartbeat.json")
    return HostLoop(conn, cfg, alert=hooks.alert, reboot=hooks.reboot)


def test_reboot_never_while_the_api_is_unreachable(tmp_path: Path) -> None:
    hooks = Hooks()
    loop = make_loop(unreachable_conn(), tmp_path, hooks, Action.REBOOT)
    state = loop.run(max_rounds=10)
    assert hooks.reboots == []
    assert state.consecutive_failures == 10 and state.consecutive_down == 0
    status = read_status(tmp_path / "run" / "heartbeat.json")
    assert status is not None
    assert status["result"] == "unknown" and status["consecutive_failures"] == 10


def test_reboot_never_on_api_errors(sp: EmulatorHandle, tmp_path: Path) -> None:
    hooks = Hooks()
    sp.faults.client_down(2)
    sp.faults.fail_next("ServicesList", 10, error="internalError")
    state = make_loop(conn_to(sp), tmp_path, hooks, Action.REBOOT).run(max_rounds=10)
    assert hooks.reboots == [] and state.result is Result.UNKNOWN


def test_reboot_after_n_rounds_of_client_down(sp: EmulatorHandle, tmp_path: Path) -> None:
    hooks = Hooks()
    loop = make_loop(conn_to(sp), tmp_path, hooks, Action.REBOOT, n=3)
    loop.round()
    assert loop.state.result is Result.OK
    sp.faults.client_down(2)
    loop.round()
    loop.round()
    assert hooks.reboots == []  # two rounds down: not yet
    loop.round()
    assert len(hooks.reboots) == 1 and "client 2 is down" in hooks.reboots[0]
    assert hooks.alerts and "rebooting" in hooks.alerts[0]
    loop.round()
    assert len(hooks.reboots) == 1  # once per failure streak


def test_reboot_when_the_client_is_absent(sp: EmulatorHandle, tmp_path: Path) -> None:
    hooks = Hooks()
    make_loop(conn_to(sp), tmp_path, hooks, Action.REBOOT, client=42, n=2).run(max_rounds=2)
    assert len(hooks.reboots) == 1


def test_an_unknown_round_resets_the_reboot_count(sp: EmulatorHandle, tmp_path: Path) -> None:
    hooks = Hooks()
    loop = make_loop(conn_to(sp), tmp_path, hooks, Action.REBOOT, n=3)
    sp.faults.client_down(2)
    loop.round()
    loop.round()
    sp.faults.fail_next("ServicesList", 1, error="busy", transient=True)
    loop.round()
    assert loop.state.consecutive_down == 0 and loop.state.consecutive_failures == 3
    loop.round()
    loop.round()
    assert hooks.reboots == []
    loop.round()
    assert len(hooks.reboots) == 1


def test_alert_after_n_failures_once_then_recovery(sp: EmulatorHandle, tmp_path: Path) -> None:
    hooks = Hooks()
    loop = make_loop(conn_to(sp), tmp_path, hooks, Action.ALERT, n=2)
    sp.faults.client_down(2)
    loop.run(max_rounds=5)
    assert len(hooks.alerts) == 1 and hooks.reboots == []
    sp.faults.client_up(2)
    loop.round()
    status = read_status(loop.config.status_file)
    assert status is not None
    assert status["result"] == "ok" and status["consecutive_failures"] == 0
    sp.faults.client_down(2)
    loop.round()
    loop.round()
    assert len(hooks.alerts) == 2  # a new streak alerts again


def test_alert_also_for_an_unreachable_api(tmp_path: Path) -> None:
    hooks = Hooks()
    make_loop(unreachable_conn(), tmp_path, hooks, Action.ALERT, n=2).run(max_rounds=3)
    assert len(hooks.alerts) == 1 and "unreachable" in hooks.alerts[0]


def test_failing_alert_does_not_stop_the_loop(sp: EmulatorHandle, tmp_path: Path) -> None:
    def broken(_subject: str) -> None:
        raise RuntimeError("CloudStack is down too")

    sp.faults.client_down(2)
    cfg = LoopConfig(client_id=2, interval=TINY, max_failures=1, action=Action.ALERT,
                     status_file=tmp_path / "hb.json")
    assert HostLoop(conn_to(sp), cfg, alert=broken).run(max_rounds=3).rounds == 3


@pytest.mark.parametrize("action", [Action.NONE, Action.LOG])
def test_none_and_log_call_no_hook(sp: EmulatorHandle, tmp_path: Path, action: Action,
                                   caplog: pytest.LogCaptureFixture) -> None:
    hooks = Hooks()
    sp.faults.client_down(2)
    make_loop(conn_to(sp), tmp_path, hooks, action, n=2).run(max_rounds=4)
    assert hooks.alerts == [] and hooks.reboots == []
    logged = [r for r in caplog.records if r.levelname == "ERROR" and "failed 2 times" in r.getMessage()]
    assert len(logged) == (1 if action is Action.LOG else 0)


def test_status_file_is_replaced_atomically(sp: EmulatorHandle, tmp_path: Path) -> None:
    """A reader polling the file while the loop writes it always gets whole JSON."""
    hooks = Hooks()
    loop = make_loop(conn_to(sp), tmp_path, hooks, Action.NONE)
    loop.round()
    bad: list[str] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            text = loop.config.status_file.read_text()
            try:
                json.loads(text)
            except ValueError:
                bad.append(text)

    t = threading.Thread(target=reader)
    t.start()
    loop.run(max_rounds=40)
    done.set()
    t.join()
    assert bad == []
    assert [p.name for p in loop.config.status_file.parent.iterdir()] == ["heartbeat.json"]


def test_run_stops_on_stop_event_between_rounds(sp: EmulatorHandle, tmp_path: Path) -> None:
    cfg = LoopConfig(client_id=1, interval=30.0, status_file=tmp_path / "hb.json")
    loop = HostLoop(conn_to(sp), cfg)
    t = threading.Thread(target=loop.run)
    t.start()
    time.sleep(0.3)
    loop.stop.set()
    t.join(timeout=5)
    assert not t.is_alive() and loop.state.rounds == 1


def test_cli_run_exits_cleanly_on_sigterm(sp: EmulatorHandle, tmp_path: Path) -> None:
    with heartbeat_process(sp, tmp_path, "--action", "reboot") as hb:
        deadline = time.monotonic() + 20
        while not hb.status_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hb.status_file.exists(), hb.proc.stderr.read() if hb.proc.poll() is not None else "no status file"
    assert "stopping" in hb.err and sp.token not in hb.err
    status = read_status(hb.status_file)
    assert status is not None and status["result"] == "ok" and status["client_id"] == 3
