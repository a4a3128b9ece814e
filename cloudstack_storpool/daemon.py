"""What every long-running command (`serve`, `agent serve`, `heartbeat run`) does around its
work: one choice of log format (text or JSON lines), and SIGTERM treated like Ctrl-C so that a service manager's stop
unwinds through the caller's cleanup (cancel or wait for jobs, release the socket) instead of
killing the process mid-job.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Protocol

import click

from cloudstack_storpool import logs

log_format_opt = click.option(
    "--log-format", type=click.Choice(logs.FORMATS), default="text", show_default=True,
    help="text, or json: one JSON object a line (ts, level, logger, message, job, uuid).")


def setup_logging(verbose: bool, log_format: str = "text") -> None:
    """Every line carries the job and CloudStack uuid it belongs to, and no secret (logs.py)."""
    logs.setup(verbose, log_format)


class Serving(Protocol):
    def serve_forever(self, poll_interval: float = ...) -> None: ...


def _interrupt(_sig: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def serve_until_stopped(server: Serving, banner: str) -> None:
    """Print `banner` and serve until SIGTERM or SIGINT; returns normally on either, so the
    caller's `finally` does the cleanup."""
    signal.signal(signal.SIGTERM, _interrupt)
    click.echo(banner, err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
