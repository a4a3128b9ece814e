"""`cloudstack-storpool heartbeat status` on the emulator (and the CloudStack simulator)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from cloudstack_storpool.cli import cli
from integration.cloudstack_sim.testing import SimHandle
from integration.storpool_sim.testing import EmulatorHandle


def pools_file(tmp_path: Path, *sps: EmulatorHandle) -> Path:
    path = tmp_path / "pools.toml"
    path.write_text("".join(
        f'[[pool]]\nuuid = "00000000-0000-4000-8000-00000000000{i}"\nname = "pool{i}"\nurl = "{sp.pool_url()}"\n\n'
        for i, sp in enumerate(sps, 1)
    ))
    return path


def test_status_json_with_client_ids(spawn: Callable[..., EmulatorHandle], tmp_path: Path) -> None:
    a, b = spawn(), spawn()
    a.faults.client_down(2)
    result = CliRunner().invoke(cli, [
        "heartbeat", "status", "--pools", str(pools_file(tmp_path, a, b)), "--client-ids", "1-3",
        "--io-window", "0.05", "--fence-on-any", "--json",
    ])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["fence_on_any"] is True
    assert {h["host"]: h["verdict"] for h in data["hosts"]} == {"client-1": "alive", "client-2": "dead", "client-3": "alive"}
    two = next(h for h in data["hosts"] if h["client_id"] == 2)
    assert [(p["pool"], p["verdict"]) for p in two["pools"]] == [("pool1", "dead"), ("pool2", "alive")]
    assert a.token not in result.output and b.token not in result.output


def test_status_table_last_pool_decides(spawn: Callable[..., EmulatorHandle], tmp_path: Path) -> None:
    a, b = spawn(), spawn()
    a.faults.client_down(2)
    result = CliRunner().invoke(cli, [
        "heartbeat", "status", "--pools", str(pools_file(tmp_path, a, b)), "--client-ids", "2", "--io-window", "0",
    ])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["HOST", "CLIENT", "pool1", "pool2", "VERDICT"]
    assert lines[1].split() == ["client-2", "2", "dead", "alive", "ALIVE"]
    assert "client-2 / pool1: client down" in result.output


def test_status_hosts_from_cloudstack(sp: EmulatorHandle, cs_sim: SimHandle, tmp_path: Path) -> None:
    sp.faults.client_down(1)
    cs_sim.model.set_configuration("kvm.ha.fence.on.storage.heartbeat.failure", "true")
    env = {"CLOUDSTACK_ENDPOINT": cs_sim.endpoint, "CLOUDSTACK_KEY": cs_sim.key, "CLOUDSTACK_SECRET": cs_sim.secret}
    result = CliRunner(env=env).invoke(cli, [
        "heartbeat", "status", "--pools", str(pools_file(tmp_path, sp)), "--io-window", "0", "--json",
    ])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["fence_on_any"] is True
    verdicts = {h["host"]: h["verdict"] for h in data["hosts"]}
    assert verdicts["kvm1"] == "dead" and verdicts["kvm2"] == "alive"
    assert all(h["host_id"] for h in data["hosts"])


def test_status_bad_client_ids(sp: EmulatorHandle, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["heartbeat", "status", "--pools", str(pools_file(tmp_path, sp)),
                                      "--client-ids", "1,5000"])
    assert result.exit_code == 2 and "outside 1..4095" in result.output


def test_run_reads_the_hosts_settings_file(sp: EmulatorHandle, tmp_path: Path) -> None:
    """The loop's settings come from this host's settings file (no CloudStack involved): a bad
    value there stops it with an error naming the key; a good file runs it."""
    conf = tmp_path / "storpool.conf"
    conf.write_text("".join(f"{k}={v}\n" for k, v in sp.config_env(client_id=1).items()))
    settings = tmp_path / "settings.toml"
    settings.write_text('storpool.heartbeat.action = "explode"\n')
    args = ["heartbeat", "run", "--storpool-conf", str(conf), "--settings-file", str(settings),
            "--status-file", str(tmp_path / "hb.json"), "--rounds", "1"]
    bad = CliRunner().invoke(cli, args)
    assert bad.exit_code == 1 and "storpool.heartbeat.action" in bad.output and "one of" in bad.output
    settings.write_text('storpool.heartbeat.action = "none"\nstorpool.heartbeat.interval = 1\n')
    good = CliRunner().invoke(cli, args)
    assert good.exit_code == 0, good.output
    assert json.loads((tmp_path / "hb.json").read_text())["result"] == "ok"
