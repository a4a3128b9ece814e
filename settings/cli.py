"""Command group `cloudstack-storpool settings`."""

from __future__ import annotations

import click


@click.group("settings")
def settings_group() -> None:
    """Read and write the plugin's settings through the CloudStack API."""
