"""Emulators for the heartbeat tests: ServicesList and ClientActiveRequests need no data plane,
so these run on tmp_path without root (no XFS, no loop devices)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from cloudstack_storpool.poolconfig import PoolSpec, Secret, parse_pool_url
from integration.storpool_sim.testing import EmulatorHandle, run_emulator


def pool_of(sp: EmulatorHandle, name: str, template: str = "ssd") -> PoolSpec:
    spec = parse_pool_url(sp.pool_url(template))
    return PoolSpec(spec.host, spec.port, spec.token, spec.template, uuid=str(uuid.uuid4()), name=name)


def dead_port() -> int:
    """A loopback port nobody listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unreachable_pool(name: str = "gone") -> PoolSpec:
    return PoolSpec("127.0.0.1", dead_port(), Secret("nope"), "ssd", uuid=str(uuid.uuid4()), name=name)


def io_request(volume: str, n: int = 0) -> dict[str, Any]:
    return {"requestId": f"9223372036854775{n:03d}", "requestIdx": n, "volume": volume, "address": 4096 * n,
            "size": 4096, "op": "write", "msecActive": 120}


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
