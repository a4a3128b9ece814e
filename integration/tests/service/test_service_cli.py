"""`serve` as a real process beside the local stack: configuration from files and environment,
loopback only, secrets never on the command line or in its output, clean stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from integration.stack import LocalStack, free_port

SERVE = "from cloudstack_storpool.service_cli import serve_cmd; serve_cmd()"



def _secret_file(path: Path, value: str) -> str:
    path.write_text(value + "\n")
    path.chmod(0o600)
    return str(path)


@pytest.mark.root
def test_serve_process_end_to_end(stack: LocalStack, tmp_path: Path) -> None:
    token = uuid.uuid4().hex
    port = free_port()
    env = {**os.environ, "CLOUDSTACK_ENDPOINT": stack.cs.endpoint, "CLOUDSTACK_KEY": stack.cs.key,
           "CLOUDSTACK_SECRET": stack.cs.secret, "CLOUDSTACK_REGION": "cloudstack"}
    argv = [sys.executable, "-c", SERVE, "--listen", f"127.0.0.1:{port}",
            "--token-file", _secret_file(tmp_path / "service.token", token),
            "--agent-token-file", _secret_file(tmp_path / "agent.token", stack.agent_token),
            "--pools", str(stack.pools_file)]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                r = requests.get(url + "/v1/health", headers={"Authorization": f"Bearer {token}"}, timeout=2)
                break
            except requests.ConnectionError:
                assert proc.poll() is None, proc.communicate()[0]
                assert time.monotonic() < deadline, "service did not start"
                time.sleep(0.1)
        assert r.status_code == 200
        assert {p["name"] for p in r.json()["pools"]} == {p.name for p in stack.pools().pools}
        assert requests.get(url + "/v1/health", timeout=5).status_code == 401
        # A real operation through the real process, CloudStack and StorPool included.
        vid = str(uuid.uuid4())
        pool = stack.pools().pools[0].name
        made = requests.post(url + "/v1/volumes", headers={"Authorization": f"Bearer {token}"}, timeout=30,
                             json={"pool": pool, "volume_uuid": vid, "size": 1 << 30})
        assert made.status_code == 200, made.text
        gone = requests.delete(f"{url}/v1/volumes/{vid}", params={"pool": pool},
                               headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert gone.status_code == 200 and gone.json()["deleted"] is True
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    for secret in (token, stack.agent_token, stack.sp.token, stack.cs.secret):
        assert secret not in output
        assert all(secret not in a for a in argv)
    assert f"listening on http://127.0.0.1:{port}" in output


def test_serve_refuses_a_non_loopback_address_and_missing_secrets(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CSSP_", "CLOUDSTACK_"))}
    token_file = _secret_file(tmp_path / "t", "x" * 20)
    res = subprocess.run([sys.executable, "-c", SERVE, "--listen", "0.0.0.0:8260", "--token-file", token_file],
                         env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "loopback" in res.stderr
    res = subprocess.run([sys.executable, "-c", SERVE, "--listen", "127.0.0.1:0"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode != 0 and "CSSP_SERVICE_TOKEN" in res.stderr


def test_serve_takes_a_worker_count_in_range_and_defaults_to_the_services() -> None:
    from cloudstack_storpool.service.app import ServiceServer
    from cloudstack_storpool.service_cli import DEFAULT_WORKERS

    assert DEFAULT_WORKERS == ServiceServer.workers
    res = subprocess.run([sys.executable, "-c", SERVE, "--workers", "0"], capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "--workers" in res.stderr and "not in the range" in res.stderr
