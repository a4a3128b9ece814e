"""Emulators for the heartbeat tests: ServicesList and ClientActiveRequests need no data plane,
so these run on tmp_path without root (no XFS, no loop devices)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from integration.storpool_sim.testing import EmulatorHandle, run_emulator


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., EmulatorHandle]]:
    """Start emulators on demand (several = several clusters); all stopped at the end."""
    started: list[AbstractContextManager[EmulatorHandle]] = []

    def start(**kwargs: Any) -> EmulatorHandle:
        i = len(started)
        cm = run_emulator(tmp_path / f"data{i}", tmp_path / f"dev{i}", token=f"tok-{uuid.uuid4().hex[:8]}",
                          use_loop=False, **kwargs)
        handle = cm.__enter__()
        started.append(cm)
        return handle

    yield start
    for cm in reversed(started):
        cm.__exit__(None, None, None)


@pytest.fixture
def sp(spawn: Callable[..., EmulatorHandle]) -> EmulatorHandle:
    return spawn()


class HeartbeatProcess:
    """A `heartbeat run` process for client 3 of `sp`; `err` is its stderr once it stopped."""

    def __init__(self, proc: subprocess.Popen[str], status_file: Path) -> None:
        self.proc = proc
        self.status_file = status_file
        self.err = ""


@contextmanager
def heartbeat_process(sp: EmulatorHandle, tmp_path: Path, *args: str) -> Iterator[HeartbeatProcess]:
    """Run `heartbeat run` (interval 0.05 s, `args` added) until the block ends, then SIGTERM it and
    check it stopped cleanly (exit 0)."""
    conf = tmp_path / "storpool.conf"
    conf.write_text("".join(f"{k}={v}\n" for k, v in sp.config_env(client_id=3).items()))
    status_file = tmp_path / "hb.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SP_")}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from cloudstack_storpool.cli import main; main()", "heartbeat", "run",
         "--storpool-conf", str(conf), "--interval", "0.05", "--status-file", str(status_file), *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    handle = HeartbeatProcess(proc, status_file)
    try:
        yield handle
        proc.send_signal(signal.SIGTERM)
        _out, handle.err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, handle.err
