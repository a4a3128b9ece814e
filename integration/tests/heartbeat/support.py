"""Helpers shared by the heartbeat integration tests."""

from __future__ import annotations

import socket
import uuid
from typing import Any

from cloudstack_storpool.poolconfig import PoolSpec, Secret
from integration.storpool_sim.testing import EmulatorHandle


def pool_of(sp: EmulatorHandle, name: str, template: str = "ssd") -> PoolSpec:
    return sp.pool_spec(name, template)


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
