"""`python -m integration up` / `down`: the local stack as a background process, used for real."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import cs
import pytest
import requests
from storpool import spapi

from integration import dev_command, dev_env, leftovers
from integration.needs import need_root, need_tool

pytestmark = pytest.mark.root


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(dev_command(*args), capture_output=True, text=True, timeout=180, check=False, env=dev_env())


def test_up_serves_every_part_and_down_releases_everything(tmp_path: Path) -> None:
    need_root()
    need_tool("mkfs.xfs")
    run_dir = tmp_path / "run"
    up = _cli("up", "--run-dir", str(run_dir), "--json")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        state = json.loads(up.stdout)
        secrets = dict(line.split("=", 1) for line in Path(state["secrets_file"]).read_text().splitlines())
        assert Path(state["secrets_file"]).stat().st_mode & 0o077 == 0
        for key in ("SP_AUTH_TOKEN", "CLOUDSTACK_SECRET", "CLOUDSTACK_STORPOOL_AGENT_TOKEN", "CSSP_SERVICE_TOKEN"):
            assert secrets[key] and secrets[key] not in up.stdout + up.stderr, key
        token = secrets["CSSP_SERVICE_TOKEN"]
        health = requests.get(state["service"] + "/v1/health", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert health.status_code == 200, health.text
        assert requests.get(state["service"] + "/v1/health", timeout=10).status_code == 401
        agent_url = next(iter(state["agents"].values()))
        assert agent_url.startswith("https://")  # the stack's agents serve TLS, verified with its CA
        agent = requests.get(agent_url + "/v1/facts", verify=secrets["CLOUDSTACK_STORPOOL_AGENT_CA"],
                             headers={"Authorization": f"Bearer {secrets['CLOUDSTACK_STORPOOL_AGENT_TOKEN']}"}, timeout=10)
        assert agent.status_code == 200 and agent.json()["client_id"] in (1, 2)
        by_hand(secrets)
        # The simulator also at CloudStack's API port (8080), on the stack's own loopback address:
        # where Marvin's user API clients connect.
        api_port = state["cloudstack_api_port"]
        assert api_port == secrets["CLOUDSTACK_API_PORT_ENDPOINT"] and ":8080/" in api_port
        assert api_port != state["cloudstack"]
        zones = cs.CloudStack(api_port, secrets["CLOUDSTACK_KEY"], secrets["CLOUDSTACK_SECRET"]).listZones()
        assert zones["count"] >= 1
        again = _cli("up", "--run-dir", str(run_dir), "--json")  # idempotent: the same stack
        assert json.loads(again.stdout)["pid"] == state["pid"]
        status = _cli("stack-status", "--run-dir", str(run_dir))
        assert state["service"] in status.stdout
    finally:
        down = _cli("down", "--run-dir", str(run_dir))
    assert down.returncode == 0, down.stdout + down.stderr
    assert "stopped" in down.stdout
    assert str(run_dir) not in Path("/proc/mounts").read_text()
    assert _cli("stack-status", "--run-dir", str(run_dir)).returncode != 0


def _kill_9(state: dict[str, object]) -> None:
    pid = int(str(state["pid"]))
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def _leftovers(run_dir: Path) -> list[str]:
    return leftovers.mounts_under(run_dir) + leftovers.loops_under(run_dir)


def test_up_after_a_killed_up_recovers_and_down_cleans_a_killed_run(tmp_path: Path) -> None:
    """A kill -9 of the stack process leaves its XFS mount and loop devices: the next `up` must not
    fail on its own stale mount, and `down` must release them rather than say "not running"."""
    need_root()
    need_tool("mkfs.xfs")
    run_dir = tmp_path / "run"
    try:
        first = _cli("up", "--run-dir", str(run_dir), "--json")
        assert first.returncode == 0, first.stdout + first.stderr
        _kill_9(json.loads(first.stdout))
        assert _leftovers(run_dir), "a killed stack leaves its mount behind"

        second = _cli("up", "--run-dir", str(run_dir), "--json")
        assert second.returncode == 0, second.stdout + second.stderr
        assert "recovered from a crashed run" in second.stderr
        state = json.loads(second.stdout)
        token = dict(line.split("=", 1) for line in Path(state["secrets_file"]).read_text().splitlines())
        health = requests.get(state["service"] + "/v1/health",
                              headers={"Authorization": f"Bearer {token['CSSP_SERVICE_TOKEN']}"}, timeout=10)
        assert health.status_code == 200, health.text

        _kill_9(state)
        down = _cli("down", "--run-dir", str(run_dir))
        assert down.returncode == 0, down.stdout + down.stderr
        assert "released what a crashed run left" in down.stdout and "mount" in down.stdout
        assert _leftovers(run_dir) == []
        assert _cli("down", "--run-dir", str(run_dir)).stdout.strip() == "the local stack is not running"
    finally:
        _cli("down", "--run-dir", str(run_dir))
    assert _leftovers(run_dir) == []


def by_hand(secrets: dict[str, str]) -> None:
    """README's "Trying it by hand": the stock `cs` command line against `up`, with the env file,
    and StorPool's side through the bindings."""
    env = {**dev_env(), **secrets}
    cs_bin = str(Path(sys.executable).with_name("cs"))

    def cs(*args: str) -> dict[str, Any]:
        res = subprocess.run([cs_bin, *args], capture_output=True, text=True, timeout=120, check=False, env=env)
        assert res.returncode == 0, res.stdout + res.stderr
        assert secrets["CLOUDSTACK_SECRET"] not in res.stdout + res.stderr
        return cast(dict[str, Any], json.loads(res.stdout))

    vm = cs("deployVirtualMachine", "zoneid=13b40d45-788b-58a5-812a-45070933cf91", "name=web-1",
            "templateid=55ea65e9-2be3-5d20-a603-e23b2714f30e",
            "serviceofferingid=65ed5768-ac7d-5670-a66c-5f70342c014a")["virtualmachine"]
    assert vm["state"] == "Running"
    root = cs("listVolumes", f"virtualmachineid={vm['id']}")["volume"][0]
    snap = cs("createSnapshot", f"volumeid={root['id']}")["snapshot"]
    assert cs("resizeVolume", f"id={root['id']}", "size=2")["volume"]["size"] == 2 << 30
    api = spapi.Api(secrets["SP_API_HTTP_HOST"], int(secrets["SP_API_HTTP_PORT"]), secrets["SP_AUTH_TOKEN"])
    gid = root["path"].removeprefix("/dev/storpool-byid/")
    on_sp = next(v for v in api.volumesList() if v.globalId == gid)
    assert on_sp.size == 2 << 30 and on_sp.tags["cvm"] == vm["id"]
    assert any(s.tags.get("uuid") == snap["id"] for s in api.snapshotsList())
