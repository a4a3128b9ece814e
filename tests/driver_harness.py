"""The one harness of the driver unit tests (no tests here; test modules import `open_env`).

StorPool is the real emulator on loopback (sparse files, no loop devices: it starts in
milliseconds and needs no root), because the driver's correctness is about StorPool's rules
(names are unique, tags, parents) and a hand-written fake would only agree with our own reading
of them. CloudStack is the real simulator, reached through the real facade and settings store.
Only the KVM agents are stand-ins: a recording `FakeAgent` per host (and one the pool's work
goes to) that writes a template's bytes into the emulator's object file as a real copy would,
and fails a command on request. The end-to-end tests in integration/tests/driver use real
agents on the local stack.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudstack_storpool.agentapi.client import AgentRequestError
from cloudstack_storpool.cloudstack.records import DiskOffering, ServiceOffering, Template, VirtualMachine
from cloudstack_storpool.driver import naming, tags
from cloudstack_storpool.driver.context import DriverContext
from cloudstack_storpool.poolconfig import PoolsFile, PoolSpec, Secret
from cloudstack_storpool.settings.store import Settings
from cloudstack_storpool.spconn import StorPoolConn
from integration.cloudstack_sim.testing import SimHandle, run_simulator
from integration.stack import STACK_TEMPLATES, new_uuid
from integration.storpool_sim.model import Template as SpTemplate
from integration.storpool_sim.testing import EmulatorHandle, run_emulator

__all__ = ["Env", "FakeAgent", "FakeAgents", "GiB", "MiB", "new_uuid", "open_env"]

MiB = 1 << 20
GiB = 1 << 30
TEMPLATES = (*STACK_TEMPLATES, SpTemplate("limited", 3, "ssd", "ssd", "ssd", iops=777))


@dataclass
class FakeAgent:
    """Records every command. A copy writes `image` into the target volume's object, growing it
    to `grow_to` first when set (an image bigger than CloudStack said); `hook` runs before the
    copy (to hold it); `fail[command]` (a message or an exception) makes that command fail."""

    base_url: str
    emulator: EmulatorHandle
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    fail: dict[str, str | Exception] = field(default_factory=dict)
    result: dict[str, dict[str, Any]] = field(default_factory=dict)
    image: dict[int, bytes] = field(default_factory=lambda: {0: b"TEMPLATE"})
    grow_to: int | None = None
    hook: Callable[[], None] | None = None

    def _run(self, command: str, args: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((command, args))
        if self.hook is not None:
            self.hook()
        failure = self.fail.get(command)
        if isinstance(failure, Exception):
            raise failure
        if failure is not None:
            raise AgentRequestError(failure, code="failed")
        return dict(self.result.get(command, {}))

    def _copy(self, command: str, args: dict[str, Any]) -> dict[str, Any]:
        answer = self._run(command, args)
        gid = str(args["volume"]).rsplit("/", 1)[-1].removeprefix("~")
        if self.grow_to is not None:
            self.emulator.api().volumeUpdate("~" + gid, {"size": self.grow_to})
        for offset, data in self.image.items():
            self.emulator.write_object(gid, offset, data)
        return answer or {"volume": "~" + gid, "global_id": gid, "virtual_size": self.grow_to or 4 * MiB}

    @property
    def copies(self) -> list[dict[str, Any]]:
        """The copy commands sent, each as its arguments plus `command`."""
        return [{"command": c, **a} for c, a in self.calls if c.startswith("copy")]

    def copy_template(self, **args: Any) -> dict[str, Any]:
        return self._copy("copy_template", args)

    def copy_to_volume(self, **args: Any) -> dict[str, Any]:
        return self._copy("copy_to_volume", args)

    def backup_snapshot(self, **args: Any) -> dict[str, Any]:
        return self._run("backup_snapshot", args) or {"format": "qcow2", "virtual_size": 1, "physical_size": 1}

    def resize(self, **args: Any) -> dict[str, Any]:
        return self._run("resize", args) or {"notified": bool(args.get("vm")), "capacity": args["size"]}


class FakeAgents:
    """Stands in for the driver's AgentDirectory: one FakeAgent per host id, plus the agent a
    pool's work (`run_on_pool`) goes to."""

    def __init__(self, emulator: EmulatorHandle) -> None:
        self.emulator = emulator
        self.by_host: dict[str, FakeAgent] = {}
        self.pool_agent = FakeAgent("http://pool-agent", emulator)

    def for_host(self, host_id: str) -> FakeAgent:
        return self.by_host.setdefault(host_id, FakeAgent(f"http://{host_id}", self.emulator))

    def run_on_pool(self, pool: PoolSpec, work: Callable[[FakeAgent], Any], clusters: Any = None) -> Any:
        return work(self.pool_agent)

    def all_calls(self) -> list[tuple[str, dict[str, Any]]]:
        out = list(self.pool_agent.calls)
        for agent in self.by_host.values():
            out += agent.calls
        return out


class Clock:
    """The driver's clock and sleep: time moves only when the driver sleeps."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now
        self.slept: list[float] = []
        self.on_sleep: Callable[[], None] | None = None

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep()
        if len(self.slept) > 10_000:
            raise AssertionError("waited forever")


@dataclass
class Env:
    sp: EmulatorHandle
    cs: SimHandle
    ctx: DriverContext
    agents: FakeAgents
    clock: Clock

    # -- the pools and StorPool ----------------------------------------------------------------

    @property
    def pool(self) -> PoolSpec:
        """The simulator's `storpool-primary` (template ssd)."""
        return self.ctx.pools.pools[0]

    @property
    def pool_b(self) -> PoolSpec:
        """A second pool on the same cluster (template hybrid)."""
        return self.ctx.pools.pools[1]

    @property
    def conn(self) -> StorPoolConn:
        return self.ctx.conn(self.pool)

    @property
    def agent(self) -> FakeAgent:
        return self.agents.pool_agent

    def objects(self) -> list[Any]:
        """Every live object in the emulator (volumes and snapshots)."""
        return [o for o in self.sp.model.objects.values() if not o.deleted]

    def sp_volume(self, name: str) -> Any:
        """A volume as the bindings read it from the emulator."""
        return self.sp.api().volumeList(name)[0]

    def calls(self) -> dict[str, int]:
        return dict(self.ctx.api_calls())

    def volume(self, size: int = 8 * MiB, *, vm_id: str | None = None, max_iops: int | None = None,
               device_id: int | None = None, extra_tags: dict[str, str] | None = None) -> tuple[str, str]:
        """A StorPool volume registered in CloudStack; returns (CloudStack uuid, `~globalId`)."""
        vid = new_uuid()
        vtags = tags.identity(vid, tags.VOLUME, pool=self.pool.uuid, **(extra_tags or {}))
        created = self.conn.volume_create(name=naming.volume(vid), size=size, template="ssd", iops=max_iops,
                                          tags=vtags)
        self.cs.model.add_volume(f"vol-{vid[:6]}", size, vm_id=vm_id, storage_id=self.pool.uuid, path=created.path,
                                 volume_id=vid, max_iops=max_iops, device_id=device_id)
        return vid, created.ref

    def write(self, ref: str, offset: int, data: bytes) -> None:
        self.sp.write_object(ref, offset, data)

    def read(self, ref: str, offset: int, length: int) -> bytes:
        if ref.startswith("~"):
            return self.sp.read_object(ref.removeprefix("~"), offset, length)
        found = self.conn.snapshot(ref) or self.conn.volume(ref)
        assert found is not None, f"{ref} is not in StorPool"
        return self.sp.read_object(found.global_id, offset, length)

    def snapshot_names(self) -> set[str]:
        return {s.name for s in self.conn.snapshots() if not s.deleted}

    def volume_names(self) -> set[str]:
        return {v.name for v in self.conn.volumes()}

    # -- CloudStack (the simulator's model) -----------------------------------------------------

    def set_bypass(self, value: bool) -> None:
        self.ctx.settings.set("sp.bypass.secondary.storage", value)

    def set_setting(self, name: str, value: Any, **scope: str) -> None:
        """Through the real settings store, so a value the registry refuses fails here too."""
        self.ctx.settings.set(name, value, **scope)

    def add_template(self, size: int = MiB) -> Template:
        t = self.cs.model.add_template(f"tmpl-{new_uuid()[:8]}", size, template_id=new_uuid())
        found = self.ctx.cloudstack.template(t.id)
        assert found is not None
        return found

    def add_vm(self, *, tags: dict[str, str] | None = None, state: str = "Running",
               host_id: str | None = None) -> VirtualMachine:
        vm = self.cs.model.add_vm(f"vm-{new_uuid()[:8]}", state=state, host_id=host_id, tags=tags,
                                  storage_id=self.pool.uuid)
        found = self.ctx.cloudstack.vm(vm.id)
        assert found is not None
        return found

    def add_disk_offering(self, *, max_iops: int | None = None, details: dict[str, str] | None = None) -> DiskOffering:
        o = self.cs.model.add_disk_offering(f"do-{new_uuid()[:8]}", max_iops=max_iops, details=dict(details or {}))
        found = self.ctx.cloudstack.disk_offering(o.id)
        assert found is not None
        return found

    def add_service_offering(self, *, max_iops: int | None = None,
                             details: dict[str, str] | None = None) -> ServiceOffering:
        o = self.cs.model.add_service_offering(f"so-{new_uuid()[:8]}", max_iops=max_iops,
                                               details=dict(details or {}))
        found = self.ctx.cloudstack.service_offering(o.id)
        assert found is not None
        return found

    def add_volume(self, vid: str, vm_id: str | None, size: int = GiB) -> None:
        """CloudStack's record of a data disk (the StorPool volume is the test's to make)."""
        self.cs.model.add_volume(f"v-{vid[:8]}", size, vm_id=vm_id, storage_id=self.pool.uuid, volume_id=vid)


def _pool(sp: EmulatorHandle, template: str, uuid: str, name: str, zone: str) -> PoolSpec:
    return PoolSpec(host=sp.host, port=sp.port, token=Secret(sp.token), template=template, uuid=uuid, name=name,
                    zone=zone)


@contextmanager
def open_env(tmp_path: Path) -> Iterator[Env]:
    """Use from a per-file fixture: `with open_env(tmp_path) as e: yield e`."""
    with run_emulator(tmp_path / "sp", tmp_path / "dev", token=f"tok-{new_uuid()}", templates=TEMPLATES,
                      use_loop=False) as sp, run_simulator() as cs:
        primary = next(p for p in cs.model.storage_pools.values() if p.name == "storpool-primary")
        second = cs.model.add_storage_pool("storpool-b", primary.zone_id)
        pools = PoolsFile((_pool(sp, "ssd", primary.id, primary.name, primary.zone_id),
                           _pool(sp, "hybrid", second.id, second.name, second.zone_id)))
        client = cs.client()
        agents = FakeAgents(sp)
        clock = Clock()
        ctx = DriverContext(pools=pools, cloudstack=client, settings=Settings(client, ttl=0),
                            agents=agents,  # type: ignore[arg-type]
                            clock=clock, sleep=clock.sleep, conn_options={"retries": 1, "backoff": 0.0})
        yield Env(sp, cs, ctx, agents, clock)
