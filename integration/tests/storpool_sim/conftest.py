"""Fixtures for the emulator's own tests.

`emu` runs with plain files (no loop devices, no root) so the API-level tests run on any
developer box; the data-plane tests use `sp_emulator` (XFS + loop devices) instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration.storpool_sim.testing import EmulatorHandle, StrictApi, run_emulator


@pytest.fixture
def emu(tmp_path: Path) -> Iterator[EmulatorHandle]:
    with run_emulator(tmp_path / "data", tmp_path / "dev", use_loop=False) as handle:
        yield handle


@pytest.fixture
def api(emu: EmulatorHandle) -> StrictApi:
    return emu.strict_api()


def raw(handle: EmulatorHandle, method: str, path: str, body: Any = None, *,
        token: str | None = None, args: Any = None) -> tuple[int, Any]:
    """One HTTP request as a hand-written client would send it; returns (status, decoded JSON)."""
    return handle.raw(method, path, body, token=token, args=args)
