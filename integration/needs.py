"""One rule for tests that need a system component: skip on a developer box, fail in CI.

CI (CI=true) promises a machine with every component installed by `make test`, so a missing
loop device, XFS tool or libvirtd there is a broken set-up, never a reason to skip.
"""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(ok: bool, what: str) -> None:
    """Skip (developer box) or fail (CI) when `ok` is false; `what` names the missing component."""
    if ok:
        return
    if in_ci():
        pytest.fail(f"required system component missing in CI: {what}")
    pytest.skip(f"needs {what}")


def need_root() -> None:
    need(os.geteuid() == 0, "root (loop devices, mounts)")


def need_tool(name: str) -> str:
    path = shutil.which(name)
    need(path is not None, f"the `{name}` program")
    assert path is not None
    return path
