"""Command group `cloudstack-storpool sim`: the stand-ins, each defined beside its own code."""

from __future__ import annotations

import click

from integration.cloudstack_sim.cli import cloudstack_cmd
from integration.storpool_sim.cli import storpool_cmd


@click.group("sim")
def sim_group() -> None:
    """Run the StorPool emulator or the CloudStack simulator."""


sim_group.add_command(storpool_cmd)
sim_group.add_command(cloudstack_cmd)
