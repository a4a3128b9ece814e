"""Fixtures of the unit tests.

Unit tests start at most the stand-ins they talk to (the emulator on sparse files, the
simulator), never the local stack: anything that needs agents, libvirt, loop devices or XFS
belongs in integration/tests. The guard below makes starting the stack here a failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.stack import LocalStack
from tests.driver_harness import Env, open_env


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    """The driver harness (tests/driver_harness.py): emulator, simulator, recording agents."""
    with open_env(tmp_path) as e:
        yield e


@pytest.fixture(autouse=True)
def no_local_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: LocalStack) -> None:
        raise AssertionError("a unit test started the local stack: move it to integration/tests/")

    monkeypatch.setattr(LocalStack, "start", refuse)
