"""`heartbeat run --log-format json`: JSON lines, each round's lines under its own job id, and the
StorPool token never printed."""

from __future__ import annotations

import json
import time
from pathlib import Path

from integration.storpool_sim.testing import EmulatorHandle
from integration.tests.heartbeat.conftest import heartbeat_process


def test_json_lines_name_the_round(sp: EmulatorHandle, tmp_path: Path) -> None:
    sp.model.set_client_status(3, "down")  # every round logs its failure
    with heartbeat_process(sp, tmp_path, "--action", "log", "--max-failures", "100", "--log-format", "json") as hb:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status = json.loads(hb.status_file.read_text()) if hb.status_file.exists() else {}
            if status.get("consecutive_failures", 0) >= 3:
                break
            time.sleep(0.05)
    lines = [json.loads(x) for x in hb.err.splitlines() if x.startswith("{")]
    rounds = [x for x in lines if x["message"].startswith("heartbeat: fail")]
    assert len(rounds) >= 3, hb.err
    assert [x["job"] for x in rounds[:3]] == ["heartbeat-1", "heartbeat-2", "heartbeat-3"]
    assert sp.token not in hb.err
