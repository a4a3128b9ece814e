"""AgentDirectory: which agent a VM, host or pool goes to; failover only when unreachable."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cloudstack_storpool.agent.client import AgentClient, AgentRequestError
from cloudstack_storpool.agent.server import AgentServer
from cloudstack_storpool.driver.agents import AgentDirectory
from cloudstack_storpool.errors import NotFound
from cloudstack_storpool.poolconfig import PoolSpec, Secret
from integration.cloudstack_sim.model import CloudStackModel, Host
from integration.cloudstack_sim.testing import SimHandle, run_simulator
from integration.stack import free_port
from tests.agent_support import TOKEN


@pytest.fixture
def world() -> Iterator[SimHandle]:
    """An empty CloudStack (one zone, one cluster): the test adds exactly the hosts it means."""
    with run_simulator(seed=False) as sim:
        zone = sim.model.add_zone("zone1")
        sim.model.add_cluster("cluster1", zone.id)
        sim.model.add_template("tmpl", 1 << 20, zone_id=zone.id)
        sim.model.add_service_offering("small")
        yield sim


def pool_in(sim: SimHandle) -> PoolSpec:
    zone = next(iter(sim.model.zones))
    return PoolSpec(host="127.0.0.1", port=81, token=Secret("x"), template="ssd", uuid="p", name="p", zone=zone)


def add_host(model: CloudStackModel, name: str, *, port: int = 8259, client_id: int | None = 1,
             state: str = "Up") -> Host:
    return model.add_host(name, sp_ourid=client_id, details={"agent.port": str(port)}, state=state)


def test_vm_goes_to_its_host_and_a_stopped_vm_to_none(world: SimHandle) -> None:
    """CloudStack's listVirtualMachines gives `hostid` only while the VM is on a host, and no last
    host: a stopped VM has no agent."""
    model = world.model
    h1, h2 = add_host(model, "kvm1", port=9001), add_host(model, "kvm2", port=9002)
    d = AgentDirectory(world.client(), TOKEN)
    running = model.add_vm("running", host_id=h1.id)
    stopped = model.add_vm("stopped", state="Stopped", host_id=h2.id)  # last ran on kvm2
    never = model.add_vm("never", state="Stopped")
    assert d.for_vm(running.id).base_url.endswith(":9001")  # type: ignore[union-attr]
    assert d.for_vm(stopped.id) is None
    assert d.for_vm(never.id) is None
    with pytest.raises(NotFound):
        d.for_vm("missing")
    assert d.for_host(h2.id) is d.for_host(h2.id)  # one cached client per address
    with pytest.raises(NotFound):
        d.for_host("missing")
    assert TOKEN not in repr(d) and TOKEN not in repr(d.for_host(h1.id))


def test_pool_hosts_are_up_hosts_in_the_zone_rotated(world: SimHandle) -> None:
    """A host without an `SP_OURID` detail is one too: a Java-built cloud keeps client ids in
    `host.parent`, which listHosts does not show, and the agent attaches with its own id."""
    a, b = add_host(world.model, "a", port=1), add_host(world.model, "b", port=2)
    add_host(world.model, "down", state="Down")
    c = add_host(world.model, "no-detail", client_id=None, port=3)
    d = AgentDirectory(world.client(), TOKEN)
    first = [h.name for h in d.hosts_for_pool(pool_in(world))]
    second = [h.name for h in d.hosts_for_pool(pool_in(world))]
    assert sorted(first) == sorted([a.name, b.name, c.name]) and first != second
    empty = world.model.add_zone("zone-without-hosts").id
    other_zone = PoolSpec(host="h", port=81, token=Secret("x"), template="t", uuid="q", name="q", zone=empty)
    with pytest.raises(NotFound):
        d.for_pool(other_zone)


def test_run_on_pool_skips_unreachable_agents_only(agent_server: AgentServer, world: SimHandle) -> None:
    add_host(world.model, "dead", port=free_port())
    add_host(world.model, "live", port=agent_server.server_address[1])
    d = AgentDirectory(world.client(), TOKEN, timeout=2)
    pool = pool_in(world)

    def facts(client: AgentClient) -> str:
        return str(client.facts()["client_id"])

    for _ in range(2):  # whichever host the rotation starts with
        assert d.run_on_pool(pool, facts) == "1"

    def failing(client: AgentClient) -> str:
        raise AgentRequestError("copy failed", code="internal")

    with pytest.raises(AgentRequestError) as exc:
        d.run_on_pool(pool, failing)
    assert exc.value.code == "internal"


def test_every_agent_failure_names_the_host_and_answers_502(agent_server: AgentServer, world: SimHandle) -> None:
    """A command the agent ran and failed (its StorPool is unreachable here), a refusal, and an
    agent that does not answer: each error's text starts with the host's CloudStack id and the
    address dialled, and the service answers it 502 (never 500)."""
    from cloudstack_storpool.service.app import error_response

    live = add_host(world.model, "live", port=agent_server.server_address[1])
    port = free_port()
    dead = add_host(world.model, "dead", port=port)
    d = AgentDirectory(world.client(), TOKEN, timeout=2)
    d.for_host(dead.id).post_retries = 0
    url = f"http://127.0.0.1:{agent_server.server_address[1]}"
    failures = []
    for call in (lambda: d.for_host(live.id).connect(volume="~a.b.c"),
                 lambda: d.for_host(live.id).start("no-such-command", {}),
                 lambda: d.for_host(dead.id).facts()):
        with pytest.raises(AgentRequestError) as exc:
            call()
        failures.append(exc.value)
    assert [str(e).startswith(f"agent of host {live.id} ({url}): ") for e in failures[:2]] == [True, True]
    assert str(failures[2]).startswith(f"agent of host {dead.id} (http://127.0.0.1:{port}): unreachable")
    assert [e.host_id for e in failures] == [live.id, live.id, dead.id]
    assert [error_response(e)[0] for e in failures] == [502, 502, 502]
