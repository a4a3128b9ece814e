"""Command group `cloudstack-storpool heartbeat`."""

from __future__ import annotations

import click


@click.group("heartbeat")
def heartbeat_group() -> None:
    """Storage-network heartbeat and host-HA checks."""
