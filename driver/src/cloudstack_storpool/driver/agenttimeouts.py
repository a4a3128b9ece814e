"""How long the driver waits for a KVM host agent, from the project's settings.

Two bounds, because the work differs by orders of magnitude: an attach, detach, resize or
hand-over is done in seconds unless the host is in trouble, and the caller (CloudStack's
orchestration, holding locks) should learn of that trouble within a minute; a copy to or from
secondary storage may run for an hour. Both are read at each use, so a changed value applies to
the next command. The agent is sent the same bound as the job's own limit, so a command the
driver stopped waiting for is also stopped on the host.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cloudstack_storpool.driver.context import DriverContext


def command_timeout(ctx: DriverContext) -> float:
    """Seconds for a short agent command (`storpool.agent.timeout`)."""
    value = ctx.settings.get("storpool.agent.timeout")
    return float(value) if isinstance(value, int) else 60.0


def copy_timeout(ctx: DriverContext) -> float:
    """Seconds for an agent copy (`storpool.agent.copy.timeout`): fills and imports alike."""
    value = ctx.settings.get("storpool.agent.copy.timeout")
    return float(value) if isinstance(value, int) else 7200.0
