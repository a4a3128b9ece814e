"""The one console script. Each package owns its command group; this module only wires them."""

from __future__ import annotations

import click

from cloudstack_storpool import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cloudstack-storpool")
def cli() -> None:
    """StorPool primary storage for Apache CloudStack: driver, KVM agent, heartbeat, settings."""


def _register() -> None:
    # Imported here so that `--help` of one group does not pay for importing every other one's
    # heavy dependencies at module import time of this file.
    from cloudstack_storpool.agent.cli import agent_group
    from cloudstack_storpool.heartbeat.cli import heartbeat_group
    from cloudstack_storpool.ops_cli import (
        gc_cmd,
        pool_group,
        snapshot_group,
        template_group,
        vmsnapshot_group,
        volume_group,
    )
    from cloudstack_storpool.service_cli import serve_cmd
    from cloudstack_storpool.settings.cli import settings_group

    for group in (settings_group, agent_group, heartbeat_group, pool_group, template_group, volume_group, gc_cmd,
                  serve_cmd, snapshot_group, vmsnapshot_group):
        cli.add_command(group)


_register()


def main() -> None:
    cli()
