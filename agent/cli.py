"""Command group `cloudstack-storpool agent`."""

from __future__ import annotations

import click


@click.group("agent")
def agent_group() -> None:
    """KVM host agent: attach, copy, back up, resize, safe start."""
