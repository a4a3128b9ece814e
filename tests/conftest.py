"""Fixtures of the unit tests.

Unit tests start at most the stand-ins they talk to (the emulator on sparse files, the
simulator), never the local stack: anything that needs agents, libvirt, loop devices or XFS
belongs in integration/tests. The guard below makes starting the stack here a failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudstack_storpool.agent.hostconfig import HostConfig
from cloudstack_storpool.agent.server import AgentServer
from integration.stack import LocalStack
from tests.agent_support import serve_agent
from tests.driver_harness import Env, open_env


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    """The driver harness (tests/driver_harness.py): emulator, simulator, recording agents."""
    with open_env(tmp_path) as e:
        yield e


@pytest.fixture
def agent_server(tmp_path: Path) -> Iterator[AgentServer]:
    """A real agent on loopback (tests/agent_support.py), client id 1, StorPool unreachable."""
    host = HostConfig(client_id=1, dev_root=str(tmp_path / "dev"), mount_root=str(tmp_path / "mnt"),
                      secondary_roots=(str(tmp_path),))
    with serve_agent(host) as srv:
        yield srv


@pytest.fixture(autouse=True)
def no_local_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: LocalStack) -> None:
        raise AssertionError("a unit test started the local stack: move it to integration/tests/")

    monkeypatch.setattr(LocalStack, "start", refuse)
