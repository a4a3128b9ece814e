"""Shared pytest fixtures live next to the stand-ins they start; this file loads them, and checks
at the end of the run that no file of the checkout was loaded as two modules (two module objects,
hence two copies of each class: an `except` naming one misses the other's errors)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = [
    "integration.storpool_sim.pytest_fixtures",
    "integration.cloudstack_sim.pytest_fixtures",
]

CHECKOUT = Path(__file__).resolve().parent

# The fixtures that need root (loop devices, XFS mounts) or a running libvirtd. A test using one
# must carry the matching marker, so that `-m "not root and not libvirt"` selects what runs on a
# laptop; tests that check for root or libvirtd themselves carry the marker by hand.
FIXTURES_NEEDING = {"root": {"xfs_dir", "lab"}, "libvirt": {"virt", "vm_conn"}}


def unmarked_needs(items: list[pytest.Item]) -> list[str]:
    """Tests that use a fixture needing root or libvirtd without the marker saying so."""
    out = []
    for item in items:
        for marker, fixtures in FIXTURES_NEEDING.items():
            used = fixtures & set(getattr(item, "fixturenames", ()))
            if used and item.get_closest_marker(marker) is None:
                out.append(f"{item.nodeid} uses {', '.join(sorted(used))} but is not marked `{marker}`")
    return out


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = unmarked_needs(items)
    if missing:
        raise pytest.UsageError("\n".join(missing))


def modules_loaded_twice(modules: dict[str, object], root: Path) -> dict[str, list[str]]:
    """Files under `root` that more than one distinct module object was loaded from, with the
    names they were loaded under. Aliases of one module object (as `os.path` is of `posixpath`)
    are one module, not two."""
    seen: dict[str, dict[int, str]] = {}
    for name, module in list(modules.items()):
        file = getattr(module, "__file__", None)
        if not isinstance(file, str):
            continue
        path = os.path.realpath(file)
        if Path(path).is_relative_to(root):
            seen.setdefault(path, {}).setdefault(id(module), name)
    return {path: sorted(names.values()) for path, names in seen.items() if len(names) > 1}


@pytest.fixture(scope="session", autouse=True)
def _one_module_per_file() -> Iterator[None]:
    yield
    twice = modules_loaded_twice(dict(sys.modules), CHECKOUT)
    assert not twice, f"files loaded under two module names: {twice}"
