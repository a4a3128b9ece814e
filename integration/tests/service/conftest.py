"""Fixtures: the local stack (from the driver tests) and driver services over it, in-process."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator

import pytest

from cloudstack_storpool.service import ServiceServer, make_server, serve_in_thread
from integration.stack import LocalStack
from integration.tests.driver.conftest import stack  # noqa: F401  (re-exported fixture)

ServiceFactory = Callable[[], ServiceServer]


@pytest.fixture
def service_token() -> str:
    return secrets.token_urlsafe(24)


@pytest.fixture
def start_service(stack: LocalStack, service_token: str) -> Iterator[ServiceFactory]:  # noqa: F811
    """Start a service with its own driver context, as a separate process would have: its own
    StorPool connections and caches, sharing only the stack (StorPool, CloudStack, agents)."""
    started: list[ServiceServer] = []

    def start() -> ServiceServer:
        server = make_server(stack.driver_context(), service_token, pools_file=stack.pools_file,
                             secrets=(stack.agent_token, stack.sp.token, stack.cs.secret))
        serve_in_thread(server)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close(job_timeout=30)


@pytest.fixture
def service(start_service: ServiceFactory) -> ServiceServer:
    return start_service()
