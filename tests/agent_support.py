"""A real agent server on loopback for the unit tests (no tests here).

Its StorPool is deliberately unreachable: what these tests exercise (authentication,
validation, jobs, the directory's failover) must not need StorPool.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from cloudstack_storpool.agent.hostconfig import HostConfig
from cloudstack_storpool.agent.running import Context
from cloudstack_storpool.agent.server import AgentServer, serve_in_thread
from cloudstack_storpool.spconn import StorPoolConn
from integration.stack import free_port

TOKEN = "agent-test-token-0123456789"


@contextmanager
def serve_agent(host: HostConfig) -> Iterator[AgentServer]:
    dead_port = free_port()

    def ctx() -> Context:
        return Context(host=host, conn=StorPoolConn("127.0.0.1", dead_port, "sp-tok", retries=0, timeout=2))

    srv = AgentServer(("127.0.0.1", 0), TOKEN, ctx)
    serve_in_thread(srv)
    try:
        yield srv
    finally:
        srv.shutdown_all()
