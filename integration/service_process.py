"""The driver service (`cloudstack-storpool serve`) as a real process beside a local stack.

Crash tests kill it with SIGKILL mid-operation and start it again, as systemd would after a
crash: nothing of the dead process survives but what it left on StorPool, so a test sees
exactly what an operator's next request meets. Its credentials go through the environment and
files only, like a deployed service's.
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

from integration.stack import LocalStack

SERVE = "from cloudstack_storpool.service_cli import serve_cmd; serve_cmd()"
LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")


class ServiceProcess:
    """`with ServiceProcess(stack) as svc:`; `svc.kill()` is kill -9, `svc.start()` a restart."""

    def __init__(self, stack: LocalStack, *, settings_ttl: float = 0.5) -> None:
        self.stack = stack
        self.settings_ttl = settings_ttl
        self.token = secrets.token_urlsafe(24)
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.output: list[str] = []

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def start(self, timeout: float = 30.0) -> ServiceProcess:
        env = {**os.environ, **self.stack.driver_env(), "CLOUDSTACK_REGION": "cloudstack",
               "CSSP_SERVICE_TOKEN": self.token}
        argv = [sys.executable, "-c", SERVE, "--listen", "127.0.0.1:0", "--pools", str(self.stack.pools_file),
                "--settings-ttl", str(self.settings_ttl)]
        self.proc = proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        started = threading.Event()

        def drain() -> None:  # keep reading, or a full pipe would block the service's logging
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
            raise AssertionError("the service did not start:\n" + "".join(self.output))
        return self

    def kill(self) -> None:
        """kill -9: no cleanup, no finally, no atexit."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.url = ""

    def post(self, path: str, body: dict[str, Any]) -> requests.Response:
        return requests.post(self.url + path, json=body, headers={"Authorization": f"Bearer {self.token}"}, timeout=30)

    def job(self, job_id: str) -> dict[str, Any]:
        r = requests.get(f"{self.url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {self.token}"}, timeout=30)
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

