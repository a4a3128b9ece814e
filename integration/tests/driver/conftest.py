"""The `stack` fixture: emulator + simulator + agents + driver context, on reflink XFS."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration.libvirt_domain import URI, open_libvirt
from integration.needs import need, need_tool
from integration.stack import LocalStack


@pytest.fixture
def stack(xfs_dir: Path) -> Iterator[LocalStack]:
    """A whole local stack per test. Its data lives on the session's XFS mount, so the emulator
    clones with reflinks; each test gets its own directory, devices and ports."""
    need_tool("qemu-img")
    root = xfs_dir / f"stack-{uuid.uuid4().hex[:10]}"
    try:
        with LocalStack(root, make_xfs=False) as s:
            yield s
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def virt() -> Iterator[Any]:
    """A connection to the machine's libvirtd (qemu:///system): real domains for the tests."""
    need_tool("qemu-system-x86_64")
    try:
        conn = open_libvirt()
    except Exception as exc:  # libvirt missing or libvirtd not running
        need(False, f"a running libvirtd at {URI} ({exc})")
    try:
        yield conn
    finally:
        conn.close()
