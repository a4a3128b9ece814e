"""`cloudstack-storpool sim cloudstack` as a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import cs
import pytest
from click.testing import CliRunner

from integration import dev_command, dev_env
from integration.cloudstack_sim.cli import cloudstack_cmd

SECRET = "cli-test-secret-value"


def _start(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        dev_command("sim", "cloudstack", "--listen", "127.0.0.1:0", *args),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env=dev_env({**os.environ, **(env or {})}),
    )


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    return out + err


def test_serves_with_secret_from_env_and_never_prints_it(tmp_path: Path) -> None:
    state = tmp_path / "cs.json"
    proc = _start(tmp_path, "--state", str(state), "--key", "k1", env={"CLOUDSTACK_SIM_SECRET": SECRET})
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        assert first.startswith("endpoint: http://127.0.0.1:")
        endpoint = first.split(" ", 1)[1]
        assert proc.stdout.readline().strip() == "key: k1"
        api = cs.CloudStack(endpoint, "k1", SECRET, method="post")
        api.updateConfiguration(name="sp.bypass.secondary.storage", value="true")
    finally:
        rest = _stop(proc)
    assert proc.returncode == 0
    assert SECRET not in rest
    assert SECRET not in state.read_text()
    saved = json.loads(state.read_text())
    assert next(c for c in saved["configs"] if c["name"] == "sp.bypass.secondary.storage")["value"] == "true"


def test_random_secret_goes_to_a_private_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    env = {k: v for k, v in os.environ.items() if k != "CLOUDSTACK_SIM_SECRET"}
    proc = subprocess.Popen(
        dev_command("sim", "cloudstack", "--listen", "127.0.0.1:0", "--secret-file", str(secret_file)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=dev_env(env),
    )
    try:
        assert proc.stdout is not None
        endpoint = proc.stdout.readline().strip().split(" ", 1)[1]
        key = proc.stdout.readline().strip().split(" ", 1)[1]
        secret = secret_file.read_text().strip()
        assert (secret_file.stat().st_mode & 0o777) == 0o600
        assert cs.CloudStack(endpoint, key, secret).listZones()["count"] == 1
    finally:
        out = _stop(proc)
    assert secret not in out


@pytest.mark.parametrize("listen", ["0.0.0.0:8096", "10.1.2.3:80", "nonsense"])
def test_listen_must_be_loopback(listen: str) -> None:
    result = CliRunner().invoke(cloudstack_cmd, ["--listen", listen, "--secret", "x"])
    assert result.exit_code == 2
    assert "--listen" in result.output


@pytest.mark.parametrize("with_service", [False, True])
def test_storage_commands_reach_the_configured_service_or_fail_as_cloudstack_does(tmp_path: Path,
                                                                                 with_service: bool) -> None:
    """With --service-url the storage commands call the plugin (here: nothing listens there);
    without one they fail their job. Either way a failed async job, errorcode 530, no token shown."""
    token = "service-token-never-shown"
    args = ["--key", "k1", "--image-store", str(tmp_path)]
    if with_service:
        args += ["--service-url", "http://127.0.0.1:9"]
    proc = _start(tmp_path, *args, env={"CLOUDSTACK_SIM_SECRET": SECRET, "CSSP_SERVICE_TOKEN": token})
    try:
        assert proc.stdout is not None
        endpoint = proc.stdout.readline().strip().split(" ", 1)[1]
        api = cs.CloudStack(endpoint, "k1", SECRET, fetch_result=True, poll_interval=0.05, job_timeout=60)
        zone = api.listZones()["zone"][0]["id"]
        offering = api.listDiskOfferings(name="sp-small")["diskoffering"][0]["id"]
        pool = api.listStoragePools(name="storpool-primary")["storagepool"][0]["id"]
        with pytest.raises(cs.CloudStackApiException) as failed:
            api.createVolume(name="data", zoneid=zone, diskofferingid=offering, storageid=pool)
        err = failed.value.error
    finally:
        out = _stop(proc)
    assert err["errorcode"] == 530
    expected = "plugin unreachable during create_volume" if with_service else "no plugin configured"
    assert expected in err["errortext"]
    assert token not in err["errortext"] + out
