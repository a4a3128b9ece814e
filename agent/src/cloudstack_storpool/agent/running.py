"""What a running agent command is given besides its request: the host it runs on and its
StorPool connection (`Context`), and a way to report progress, a cancel flag and a deadline
(`RunControl`). Below the command modules, which all take them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cloudstack_storpool.agent.attach import SpConn
from cloudstack_storpool.agent.hostconfig import HostConfig
from cloudstack_storpool.errors import ProjectError


class Cancelled(ProjectError):
    code = "cancelled"


class TimedOut(ProjectError):
    code = "timeout"


@dataclass
class RunControl:
    """What a running command is given besides its request: a way to report progress, a
    cancel flag and a deadline (monotonic seconds) that every blocking step honours."""

    progress: Callable[[float], None] = lambda _pct: None
    cancel: threading.Event = field(default_factory=threading.Event)
    deadline: float | None = None

    def remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    def check(self) -> None:
        if self.cancel.is_set():
            raise Cancelled("cancelled")
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise TimedOut("time limit reached")

    def step_timeout(self, default: float) -> float:
        rem = self.remaining()
        return default if rem is None else max(1.0, min(default, rem))


@dataclass(frozen=True)
class Context:
    host: HostConfig
    conn: SpConn
