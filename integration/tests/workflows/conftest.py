"""Fixtures: the local stack with its driver service, and the real `cs` client on its simulator.

These tests touch CloudStack only through `cs` (what a user or CloudStack's own integration
tests send) and check StorPool only through the official bindings."""

from __future__ import annotations

from typing import Any

import cs
import pytest

from integration.stack import LocalStack
from integration.tests.driver.conftest import stack  # noqa: F401  (re-exported fixture)


@pytest.fixture
def cloud(stack: LocalStack) -> cs.CloudStack:  # noqa: F811
    """The `cs` client, waiting for async jobs as `cs -w` does; the stack's service is started
    and the simulator told about it, so storage commands reach the plugin."""
    stack.start_service()
    return cs.CloudStack(stack.cs.endpoint, stack.cs.key, stack.cs.secret, fetch_result=True, poll_interval=0.05,
                         job_timeout=180)


@pytest.fixture
def sp(stack: LocalStack) -> Any:  # noqa: F811
    """StorPool's API through the official bindings."""
    return stack.sp.api()
