"""The demo is part of the test suite: the quick start must keep working."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from integration import dev_command, dev_env
from integration.needs import need_root, need_tool

pytestmark = [pytest.mark.root, pytest.mark.libvirt]


def test_demo_runs_every_step_and_passes(tmp_path: Path) -> None:
    need_root()
    need_tool("qemu-img")
    need_tool("mkfs.xfs")
    res = subprocess.run(dev_command("demo", "--root", str(tmp_path / "demo")), capture_output=True, text=True, env=dev_env(),
                         timeout=600, check=False)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "demo: 8 of 8 steps passed" in out
    assert "FAIL" not in out
    # The stack cleaned up after itself: no XFS mount of the demo is left.
    assert str(tmp_path) not in Path("/proc/mounts").read_text()
