"""Pytest fixtures for this stand-in (loaded by the root conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from integration.cloudstack_sim.testing import SimHandle, run_simulator


@pytest.fixture
def cs_sim() -> Iterator[SimHandle]:
    """A freshly seeded CloudStack simulator on a free loopback port."""
    with run_simulator() as sim:
        yield sim
