"""AgentDirectory: which agent a VM, host or pool goes to; failover only when unreachable."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudstack_storpool.agent.client import AgentClient, AgentRequestError
from cloudstack_storpool.agent.commands import Context
from cloudstack_storpool.agent.hostconfig import HostConfig
from cloudstack_storpool.agent.server import AgentServer, serve_in_thread
from cloudstack_storpool.driver.agents import AgentDirectory
from cloudstack_storpool.errors import NotFound
from cloudstack_storpool.poolconfig import PoolSpec, Secret
from cloudstack_storpool.spconn import StorPoolConn
from tests.test_driver_support import ZONE, FakeCloudStack

TOKEN = "directory-test-token"
POOL = PoolSpec(host="127.0.0.1", port=81, token=Secret("x"), template="ssd", uuid="p", name="p", zone=ZONE)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentServer]:
    host = HostConfig(client_id=1, dev_root=str(tmp_path / "dev"), mount_root=str(tmp_path / "mnt"),
                      secondary_roots=(str(tmp_path),))
    dead = _free_port()
    srv = AgentServer(("127.0.0.1", 0), TOKEN, lambda: Context(
        host=host, conn=StorPoolConn("127.0.0.1", dead, "t", retries=0, timeout=1)))
    serve_in_thread(srv)
    yield srv
    srv.shutdown_all()


def test_vm_goes_to_its_host_and_a_stopped_vm_to_none() -> None:
    """CloudStack's listVirtualMachines gives `hostid` only while the VM is on a host, and no last
    host: a stopped VM has no agent."""
    cs = FakeCloudStack()
    h1, h2 = cs.add_host("kvm1", port=9001), cs.add_host("kvm2", port=9002)
    d = AgentDirectory(cs, TOKEN)  # type: ignore[arg-type]
    running = cs.add_vm(host_id=h1.id)
    stopped = cs.add_vm(state="Stopped")
    assert d.for_vm(running.id).base_url.endswith(":9001")  # type: ignore[union-attr]
    assert d.for_vm(stopped.id) is None
    with pytest.raises(NotFound):
        d.for_vm("missing")
    assert d.for_host(h2.id) is d.for_host(h2.id)  # one cached client per address
    with pytest.raises(NotFound):
        d.for_host("missing")
    assert TOKEN not in repr(d) and TOKEN not in repr(d.for_host(h1.id))


def test_pool_hosts_are_up_storpool_clients_in_the_zone_rotated() -> None:
    cs = FakeCloudStack()
    a, b = cs.add_host("a", port=1), cs.add_host("b", port=2)
    cs.add_host("down", state="Down")
    cs.add_host("no-client", client_id=None)
    d = AgentDirectory(cs, TOKEN)  # type: ignore[arg-type]
    first = [h.name for h in d.hosts_for_pool(POOL)]
    second = [h.name for h in d.hosts_for_pool(POOL)]
    assert sorted(first) == sorted([a.name, b.name]) and first != second
    other_zone = PoolSpec(host="h", port=81, token=Secret("x"), template="t", uuid="q", name="q", zone="elsewhere")
    with pytest.raises(NotFound):
        d.for_pool(other_zone)


def test_run_on_pool_skips_unreachable_agents_only(agent: AgentServer) -> None:
    cs = FakeCloudStack()
    cs.add_host("dead", port=_free_port())
    cs.add_host("live", port=agent.server_address[1])
    d = AgentDirectory(cs, TOKEN, timeout=2)  # type: ignore[arg-type]

    def facts(client: AgentClient) -> str:
        return str(client.facts()["client_id"])

    for _ in range(2):  # whichever host the rotation starts with
        assert d.run_on_pool(POOL, facts) == "1"

    def failing(client: AgentClient) -> str:
        raise AgentRequestError("copy failed", code="internal")

    with pytest.raises(AgentRequestError) as exc:
        d.run_on_pool(POOL, failing)
    assert exc.value.code == "internal"
