"""`sim storpool` as a process: serves, keeps the token out of its output, stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from storpool import spapi

from integration.stack import free_port

REPO = Path(__file__).resolve().parents[3]
TOKEN = "cli-secret-token-4242"



def _wait_listening(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("emulator did not start listening")


def test_cli_serves_until_sigterm_and_cleans_up(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "SP_AUTH_TOKEN": TOKEN}
    cmd = [sys.executable, "-c", "from integration.storpool_sim.cli import storpool_cmd; storpool_cmd()",
           "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "data"), "--dev-root",
           str(tmp_path / "dev"), "--clients", "1,7", "--templates", "ssd,gold:2"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_listening(port, proc)
        api = spapi.Api("127.0.0.1", port, auth=TOKEN, multiCluster=True, transientRetries=0)
        assert sorted(api.servicesList().clients) == [1, 7]
        assert {t.name: t.replication for t in api.volumeTemplatesList()} == {"ssd": 3, "gold": 2}
        gid = api.volumeCreate({"name": "v", "size": 1 << 26, "template": "gold"}).globalId
        api.volumesReassign([{"volume": "v", "rw": [7]}])
        assert (tmp_path / "dev" / "7" / "storpool-byid" / gid).exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert TOKEN not in out + err
    assert "listening on 127.0.0.1" in err
    assert not os.path.lexists(tmp_path / "dev" / "7" / "storpool-byid" / gid)
    losetup = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=False).stdout
    assert str(tmp_path) not in losetup
    assert (tmp_path / "data" / "state.json").exists()


def test_cli_requires_a_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SP_AUTH_TOKEN"}
    res = subprocess.run(
        [sys.executable, "-c", "from integration.storpool_sim.cli import storpool_cmd; storpool_cmd()",
         "--data-dir", str(tmp_path / "d"), "--dev-root", str(tmp_path / "v")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode != 0 and "token" in res.stderr.lower()
