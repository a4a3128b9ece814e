"""Shared pytest fixtures live next to the stand-ins they start; this file only loads them."""

pytest_plugins = [
    "integration.storpool_sim.pytest_fixtures",
    "integration.cloudstack_sim.pytest_fixtures",
]
