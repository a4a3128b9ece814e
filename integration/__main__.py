"""`python -m integration`: the developer commands, run from a checkout, never shipped.

The stand-ins (StorPool emulator, CloudStack simulator), the local stack and the demo live only in
the repository, so the production console script cannot offer them. This group is their entry
point; the Makefile's `demo`, `up` and `down` targets call it.
"""

from __future__ import annotations

import click

from integration.cloudstack_sim.cli import cloudstack_cmd
from integration.demo import demo_cmd
from integration.marvin import marvin_cmd
from integration.stack_cli import down_cmd, status_cmd, up_cmd
from integration.storpool_sim.cli import storpool_cmd


@click.group("sim")
def sim_group() -> None:
    """Run the StorPool emulator or the CloudStack simulator."""


sim_group.add_command(storpool_cmd)
sim_group.add_command(cloudstack_cmd)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def dev() -> None:
    """Developer commands of cloudstack-storpool: the stand-ins, the local stack and the demo."""


for _cmd in (sim_group, up_cmd, down_cmd, status_cmd, demo_cmd, marvin_cmd):
    dev.add_command(_cmd)


if __name__ == "__main__":
    dev(prog_name="python -m integration")
