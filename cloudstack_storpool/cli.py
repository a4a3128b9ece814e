"""The one console script. Each distribution owns its command groups and declares them as entry
points (`cloudstack_storpool.commands`); this module only wires in those that are installed, so a
KVM host with the agent and heartbeat alone gets their commands and no management ones."""

from __future__ import annotations

from importlib.metadata import entry_points

import click

from cloudstack_storpool.version import __version__

COMMAND_GROUP = "cloudstack_storpool.commands"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cloudstack-storpool")
def cli() -> None:
    """StorPool primary storage for Apache CloudStack: driver, KVM agent, heartbeat, settings."""


def _register() -> None:
    for point in entry_points(group=COMMAND_GROUP):
        command = point.load()
        if not isinstance(command, click.Command):
            raise TypeError(f"entry point {point.name} = {point.value} is not a click command")
        cli.add_command(command, point.name)


_register()


def main() -> None:
    cli()
