"""Emulators for the heartbeat tests: ServicesList and ClientActiveRequests need no data plane,
so these run on tmp_path without root (no XFS, no loop devices)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
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
