"""What every long-running `serve` command (the agent's, the driver service's) does around its
server: one log format, and SIGTERM treated like Ctrl-C so that a service manager's stop
unwinds through the caller's cleanup (cancel or wait for jobs, release the socket) instead of
killing the process mid-job.
"""

from __future__ import annotations

import logging
import signal
from types import FrameType
from typing import Protocol

import click


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


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
