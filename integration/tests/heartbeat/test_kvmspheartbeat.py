"""The `kvmspheartbeat.sh` drop-in, run as CloudStack's KVM agent runs it (`kvmspheartbeat.sh -c`),
on the status of a real host loop against the emulator, with a fake sysrq target: never a reboot
on Unknown (API unreachable), on I/O in flight, or on a stale verdict; a reboot on a confirmed Dead."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from importlib.resources import files
from pathlib import Path

from cloudstack_storpool.heartbeat.hostloop import Action, HostLoop, LoopConfig
from cloudstack_storpool.spconn import StorPoolConn
from integration.storpool_sim.testing import EmulatorHandle
from integration.tests.heartbeat.support import dead_port, io_request

SCRIPT = Path(str(files("cloudstack_storpool.heartbeat") / "kvmspheartbeat.sh"))


def _loop(conn: StorPoolConn, status: Path, client: int = 2) -> HostLoop:
    # The loop itself only logs: the reboot, if any, is the drop-in's, asked for by CloudStack.
    cfg = LoopConfig(client_id=client, interval=0.01, max_failures=3, action=Action.LOG, status_file=status)
    return HostLoop(conn, cfg)


def _run(tmp_path: Path, status: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    sysrq = tmp_path / "sysrq-trigger"
    sysrq.write_text("")
    full = {**os.environ, "CSSP_PYTHON": sys.executable, "CSSP_HEARTBEAT_STATUS": str(status),
            "CSSP_SYSRQ_TRIGGER": str(sysrq), "CSSP_SYNC_WAIT": "0", **env}
    proc = subprocess.run([str(SCRIPT), *args], env=full, capture_output=True, text=True, timeout=60)
    return proc, sysrq


def test_unknown_never_reboots(tmp_path: Path) -> None:
    status = tmp_path / "hb.json"
    conn = StorPoolConn("127.0.0.1", dead_port(), "nope", timeout=1.0, retries=0)
    _loop(conn, status).run(max_rounds=5)
    assert json.loads(status.read_text())["result"] == "unknown"
    proc, sysrq = _run(tmp_path, status, "-c")
    assert proc.returncode == 2 and sysrq.read_text() == ""
    assert "refused" in proc.stderr and "'unknown'" in proc.stderr


def test_no_status_file_never_reboots(tmp_path: Path) -> None:
    proc, sysrq = _run(tmp_path, tmp_path / "missing.json", "-c")
    assert proc.returncode == 2 and sysrq.read_text() == ""
    assert "is cloudstack-storpool-heartbeat running" in proc.stderr


def test_confirmed_dead_reboots_but_not_when_stale_or_busy(sp: EmulatorHandle, tmp_path: Path) -> None:
    status = tmp_path / "hb.json"
    conn = StorPoolConn(sp.host, sp.port, sp.token, timeout=2.0, retries=0)
    # Alive: nothing to do.
    _loop(conn, status).run(max_rounds=1)
    proc, sysrq = _run(tmp_path, status, "-c")
    assert proc.returncode == 2 and sysrq.read_text() == ""

    # Down, but StorPool still shows I/O in flight for the client: not dead, no reboot.
    sp.faults.client_down(2)
    sp.faults.set_active_requests(2, [io_request("vm-disk")])
    _loop(conn, status).run(max_rounds=3)
    assert json.loads(status.read_text())["idle"] is False
    proc, sysrq = _run(tmp_path, status, "-c")
    assert proc.returncode == 2 and sysrq.read_text() == "" and "still doing I/O" in proc.stderr

    # Down and idle for max_failures rounds: the confirmed Dead. CloudStack's call reboots.
    sp.faults.set_active_requests(2, [])
    _loop(conn, status).run(max_rounds=3)
    data = json.loads(status.read_text())
    assert data["result"] == "fail" and data["idle"] is True and data["consecutive_down"] == 3
    proc, sysrq = _run(tmp_path, status, "-c")
    assert proc.returncode == 0, proc.stderr
    assert sysrq.read_text() == "b"

    # The same verdict, once it is stale (the loop stopped), is not acted on.
    old = dict(data, time=time.time() - 600)
    status.write_text(json.dumps(old))
    proc, sysrq = _run(tmp_path, status, "-c")
    assert proc.returncode == 2 and sysrq.read_text() == "" and "stale" in proc.stderr


def test_the_stock_arguments(tmp_path: Path) -> None:
    proc, sysrq = _run(tmp_path, tmp_path / "none.json")
    assert proc.returncode == 0 and sysrq.read_text() == ""  # no -c: nothing, as the stock script
    proc, _ = _run(tmp_path, tmp_path / "none.json", "-x")
    assert proc.returncode == 1 and "Usage" in proc.stderr
