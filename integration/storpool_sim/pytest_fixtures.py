"""Pytest fixtures for the StorPool emulator (loaded by the root conftest.py).

`xfs_dir` is one reflink-capable XFS loop mount per session (making a filesystem per test would
dominate the run time); every `sp_emulator` gets a fresh subdirectory of it, so tests never see
each other's objects, and a fresh device root under its own tmp_path.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.needs import need, need_root, need_tool
from integration.storpool_sim.dataplane import loop_supported
from integration.storpool_sim.testing import EmulatorHandle, run_emulator
from integration.xfs import xfs_mount

XFS_IMAGE_SIZE = 4 * 1024**3


@pytest.fixture(scope="session")
def xfs_dir() -> Iterator[Path]:
    """A mounted XFS (`-m reflink=1`) on a sparse loop file under /tmp; gone at session end."""
    need_root()
    need_tool("mkfs.xfs")
    need(loop_supported(), "loop devices (/dev/loop-control and losetup)")
    base = Path(tempfile.mkdtemp(prefix="spsim-xfs-"))
    try:
        with xfs_mount(base, XFS_IMAGE_SIZE) as mnt:
            yield mnt
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def sp_emulator(xfs_dir: Path, tmp_path: Path) -> Iterator[EmulatorHandle]:
    """An emulator whose objects live on reflink XFS, devices under tmp_path/dev."""
    data = xfs_dir / f"sp-{uuid.uuid4().hex[:12]}"
    try:
        with run_emulator(data, tmp_path / "dev", token=f"tok-{os.getpid()}-{uuid.uuid4().hex[:8]}") as handle:
            yield handle
    finally:
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def sp_emulator_sparse(tmp_path: Path) -> Iterator[EmulatorHandle]:
    """An emulator on tmp_path (no reflinks there: clones are sparse copies); loops when possible."""
    with run_emulator(tmp_path / "data", tmp_path / "dev", token=f"tok-{uuid.uuid4().hex[:8]}") as handle:
        yield handle
