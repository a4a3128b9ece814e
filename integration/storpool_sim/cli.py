"""`cloudstack-storpool sim storpool`: run the StorPool API emulator."""

from __future__ import annotations

import click


@click.command("storpool")
def storpool_cmd() -> None:
    """Run the StorPool API emulator (not built yet)."""
    raise click.ClickException("not built yet")
