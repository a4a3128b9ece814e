"""`cloudstack-storpool sim cloudstack`: run the CloudStack API simulator."""

from __future__ import annotations

import click


@click.command("cloudstack")
def cloudstack_cmd() -> None:
    """Run the CloudStack API simulator (not built yet)."""
    raise click.ClickException("not built yet")
