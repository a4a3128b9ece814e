"""The project's servers as real processes, for crash tests: the driver service
(`cloudstack-storpool serve`) beside a local stack, and a KVM host's agent
(`cloudstack-storpool agent serve`) beside an emulator.

Crash tests kill them with SIGKILL mid-operation (the whole process group, qemu-img children
included, as systemd does to a crashed unit's cgroup) and start them again: nothing of the
dead process survives but what it left on StorPool and on secondary storage, so a test sees
exactly what an operator's next request meets. Credentials go through the environment and
files only, like a deployed server's.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from types import TracebackType
from typing import Any

import requests

from integration.certs import Issued
from integration.stack import LocalStack

LISTENING = re.compile(r"listening on (https?://127\.0\.0\.1:\d+)")


class ServerProcess:
    """`with ServerProcess(argv, env, token) as p:`; `p.kill()` is kill -9, `p.start()` a restart."""

    def __init__(self, argv: list[str], env: dict[str, str], token: str) -> None:
        self.argv, self.env, self.token = argv, env, token
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.output: list[str] = []

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def start(self, timeout: float = 30.0) -> ServerProcess:
        self.proc = proc = subprocess.Popen(self.argv, env={**os.environ, **self.env}, stdout=subprocess.PIPE,
                                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
        started = threading.Event()

        def drain() -> None:  # keep reading, or a full pipe would block the server's logging
            assert proc.stdout is not None
            for line in proc.stdout:
                self.output.append(line)
                found = LISTENING.search(line)
                if found:
                    self.url = found.group(1)
                    started.set()
            started.set()

        threading.Thread(target=drain, daemon=True).start()
        if not started.wait(timeout) or not self.url or proc.poll() is not None:
            raise AssertionError("the server did not start:\n" + "".join(self.output))
        return self

    def kill(self) -> None:
        """kill -9 of the process and its children: no cleanup, no finally, no atexit."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.url = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def post(self, path: str, body: dict[str, Any]) -> requests.Response:
        return requests.post(self.url + path, json=body, headers=self.headers, timeout=30)

    def job(self, job_id: str) -> dict[str, Any]:
        r = requests.get(f"{self.url}/v1/jobs/{job_id}", headers=self.headers, timeout=30)
        r.raise_for_status()
        return dict(r.json())

    def run_job(self, path: str, body: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
        """Submit a job route and wait for its end; returns the finished job."""
        r = self.post(path, body)
        assert r.status_code in (200, 202), r.text
        job = r.json()
        deadline = time.monotonic() + timeout
        while job["finished"] is None:
            assert time.monotonic() < deadline, f"job still {job['state']} after {timeout} s"
            time.sleep(0.1)
            job = self.job(job["id"])
        return job


def driver_service(stack: LocalStack, *, settings_ttl: float = 0.5) -> ServerProcess:
    """`cloudstack-storpool serve` over the stack's pools file, CloudStack simulator and agents."""
    token = secrets.token_urlsafe(24)
    argv = [sys.executable, "-m", "cloudstack_storpool", "serve", "--listen", "127.0.0.1:0",
            "--pools", str(stack.pools_file), "--settings-ttl", str(settings_ttl)]
    env = {**stack.driver_env(), "CLOUDSTACK_REGION": "cloudstack", "CSSP_SERVICE_TOKEN": token}
    return ServerProcess(argv, env, token)


def agent(*, client_id: int, sp_host: str, sp_port: int, sp_token_file: str, dev_root: str, mount_root: str,
          secondary_root: str, status_file: str, token: str | None = None, tls: Issued | None = None) -> ServerProcess:
    """`cloudstack-storpool agent serve` for one simulated KVM host (a fresh token unless given:
    a stack's driver dials its agents with the stack's; `tls`: serve HTTPS with that certificate,
    as a stack's agents do)."""
    token = token or secrets.token_urlsafe(24)
    argv = [sys.executable, "-m", "cloudstack_storpool", "agent", "serve", "--listen", "127.0.0.1:0",
            "--client-id", str(client_id), "--sp-host", sp_host, "--sp-port", str(sp_port),
            "--sp-token-file", sp_token_file, "--dev-root", dev_root, "--mount-root", mount_root,
            "--secondary-root", secondary_root, "--heartbeat-status-file", status_file]
    if tls is not None:
        argv += ["--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]
    return ServerProcess(argv, {"CLOUDSTACK_STORPOOL_AGENT_TOKEN": token}, token)
