"""`heartbeat run --log-format json`: JSON lines, each round's lines under its own job id, and the
StorPool token never printed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from integration.storpool_sim.testing import EmulatorHandle


def test_json_lines_name_the_round(sp: EmulatorHandle, tmp_path: Path) -> None:
    conf = tmp_path / "storpool.conf"
    conf.write_text("".join(f"{k}={v}\n" for k, v in sp.config_env(client_id=3).items()))
    sp.model.set_client_status(3, "down")  # every round logs its failure
    status_file = tmp_path / "hb.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SP_")}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from cloudstack_storpool.cli import main; main()", "heartbeat", "run",
         "--storpool-conf", str(conf), "--interval", "0.05", "--status-file", str(status_file),
         "--action", "log", "--max-failures", "100", "--log-format", "json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status = json.loads(status_file.read_text()) if status_file.exists() else {}
            if status.get("consecutive_failures", 0) >= 3:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    lines = [json.loads(x) for x in err.splitlines() if x.startswith("{")]
    rounds = [x for x in lines if x["message"].startswith("heartbeat: fail")]
    assert len(rounds) >= 3, err
    assert [x["job"] for x in rounds[:3]] == ["heartbeat-1", "heartbeat-2", "heartbeat-3"]
    assert sp.token not in err
