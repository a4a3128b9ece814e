"""Shared pieces of the driver unit tests (no tests here).

StorPool is the real emulator on loopback (it starts in milliseconds and needs no root when
nothing is attached), because the driver's correctness is about StorPool's rules (names are
unique, tags, parents) and a hand-written fake would only agree with our own reading of them.
CloudStack, settings and agents are small in-memory stand-ins built from the facade's own
typed objects; the end-to-end tests in integration/tests/driver use the real ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudstack_storpool.cloudstack import (
    DiskOffering,
    Host,
    ServiceOffering,
    Template,
    VirtualMachine,
    Volume,
)
from cloudstack_storpool.driver.context import DriverContext
from cloudstack_storpool.poolconfig import PoolsFile, PoolSpec, Secret
from integration.stack import new_uuid
from integration.storpool_sim.model import DEFAULT_TEMPLATES
from integration.storpool_sim.model import Template as SpTemplate
from integration.storpool_sim.testing import EmulatorHandle, run_emulator

TEMPLATES = (*DEFAULT_TEMPLATES, SpTemplate("nvme", 3, "nvme", "nvme", "nvme"),
             SpTemplate("limited", 3, "ssd", "ssd", "ssd", iops=777))
POOL_A = "0b6c4a52-0000-4000-8000-00000000000a"
POOL_B = "0b6c4a52-0000-4000-8000-00000000000b"
ZONE = "zone-1"


class FakeCloudStack:
    """The facade's read methods over dicts of the facade's own dataclasses."""

    def __init__(self) -> None:
        self.vms: dict[str, VirtualMachine] = {}
        self.hosts_: dict[str, Host] = {}
        self.volumes: dict[str, Volume] = {}
        self.templates_: dict[str, Template] = {}
        self.disk_offerings: dict[str, DiskOffering] = {}
        self.service_offerings: dict[str, ServiceOffering] = {}
        self.template_calls = 0
        self.fail_templates = False

    # facade API
    def vm(self, vm_id: str) -> VirtualMachine | None:
        return self.vms.get(vm_id)

    def host(self, host_id: str) -> Host | None:
        return self.hosts_.get(host_id)

    def hosts(self, zone_id: str | None = None, cluster_id: str | None = None) -> list[Host]:
        return [h for h in self.hosts_.values() if zone_id is None or h.zone_id == zone_id]

    def volume(self, volume_id: str) -> Volume | None:
        return self.volumes.get(volume_id)

    def template(self, template_id: str) -> Template | None:
        self.template_calls += 1
        if self.fail_templates:
            from cloudstack_storpool.cloudstack import CloudStackUnreachable

            raise CloudStackUnreachable("listTemplates", "cannot reach")
        return self.templates_.get(template_id)

    def disk_offering(self, offering_id: str) -> DiskOffering | None:
        return self.disk_offerings.get(offering_id)

    def service_offering(self, offering_id: str) -> ServiceOffering | None:
        return self.service_offerings.get(offering_id)

    # builders
    def add_template(self, size: int = 1 << 20, tid: str | None = None) -> Template:
        t = Template(tid or new_uuid(), "tmpl", size, "QCOW2", True)
        self.templates_[t.id] = t
        return t

    def add_vm(self, tags: dict[str, str] | None = None, state: str = "Running", host_id: str | None = None,
               last_host_id: str | None = None) -> VirtualMachine:
        vm = VirtualMachine(new_uuid(), "vm", "i-2-1-VM", state, host_id, last_host_id, ZONE, dict(tags or {}))
        self.vms[vm.id] = vm
        return vm

    def set_vm_tags(self, vm_id: str, tags: dict[str, str]) -> None:
        old = self.vms[vm_id]
        self.vms[vm_id] = VirtualMachine(old.id, old.name, old.instance_name, old.state, old.host_id,
                                         old.last_host_id, old.zone_id, dict(tags))

    def add_disk_offering(self, *, max_iops: int | None = None, details: dict[str, str] | None = None) -> DiskOffering:
        o = DiskOffering(new_uuid(), "do", None, max_iops, False, dict(details or {}))
        self.disk_offerings[o.id] = o
        return o

    def add_service_offering(self, *, max_iops: int | None = None,
                             details: dict[str, str] | None = None) -> ServiceOffering:
        o = ServiceOffering(new_uuid(), "so", None, max_iops, False, dict(details or {}))
        self.service_offerings[o.id] = o
        return o

    def add_volume(self, vid: str, vm_id: str | None) -> Volume:
        v = Volume(vid, "v", None, 1 << 30, None, None, None, vm_id, 1 if vm_id else None, None, "DATADISK")
        self.volumes[vid] = v
        return v

    def add_host(self, name: str, *, client_id: int | None = 1, state: str = "Up", port: int = 8259) -> Host:
        h = Host(new_uuid(), name, "127.0.0.1", "c1", ZONE, state,
                 client_id, {"agent.port": str(port)}, "Enabled")
        self.hosts_[h.id] = h
        return h


class FakeSettings:
    def __init__(self, **values: Any) -> None:
        self.values: dict[str, Any] = {
            "storpool.template.fill.timeout": 3600,
            "storpool.agent.copy.timeout": 60,
            "storpool.delete.after.interval": 0,
            "storpool.gc.temporary.age": 86400,
            "sp.enable.alternative.endpoint": False,
            **values,
        }
        self.asked: list[tuple[str, dict[str, Any]]] = []

    def get(self, name: str, **scope: Any) -> Any:
        self.asked.append((name, scope))
        return self.values[name]


@dataclass
class FakeAgent:
    """Stands in for an agent's copy: writes the "image" bytes into the emulator's object file."""

    emulator: EmulatorHandle
    image: dict[int, bytes] = field(default_factory=lambda: {0: b"TEMPLATE"})
    grow_to: int | None = None
    fail: Exception | None = None
    hook: Callable[[], None] | None = None
    copies: list[dict[str, Any]] = field(default_factory=list)

    def _write(self, volume: str) -> dict[str, Any]:
        gid = volume.rsplit("/", 1)[-1]
        if self.hook is not None:
            self.hook()
        if self.fail is not None:
            raise self.fail
        if self.grow_to is not None:
            api = self.emulator.api()
            api.volumeUpdate("~" + gid, {"size": self.grow_to})
        for off, data in self.image.items():
            self.emulator.write_object(gid, off, data)
        return {"volume": "~" + gid, "global_id": gid}

    def copy_template(self, **kw: Any) -> dict[str, Any]:
        self.copies.append({"command": "copy_template", **kw})
        return self._write(kw["volume"])

    def copy_to_volume(self, **kw: Any) -> dict[str, Any]:
        self.copies.append({"command": "copy_to_volume", **kw})
        return self._write(kw["volume"])


class FakeAgents:
    def __init__(self, agent: FakeAgent) -> None:
        self.agent = agent

    def run_on_pool(self, pool: PoolSpec, work: Callable[[Any], Any]) -> Any:
        return work(self.agent)


class Clock:
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
    ctx: DriverContext
    sp: EmulatorHandle
    cs: FakeCloudStack
    settings: FakeSettings
    agent: FakeAgent
    clock: Clock

    @property
    def pool(self) -> PoolSpec:
        return self.ctx.pools.pools[0]

    @property
    def pool_b(self) -> PoolSpec:
        return self.ctx.pools.pools[1]

    def objects(self) -> list[Any]:
        """Every live object in the emulator (volumes and snapshots)."""
        return [o for o in self.sp.model.objects.values() if not o.deleted]

    def volume(self, name: str) -> Any:
        return self.sp.api().volumeList(name)[0]

    def calls(self) -> dict[str, int]:
        return dict(self.ctx.api_calls())


def pool_spec(sp: EmulatorHandle, template: str, puuid: str, name: str) -> PoolSpec:
    return PoolSpec(host=sp.host, port=sp.port, token=Secret(sp.token), template=template, uuid=puuid, name=name,
                    zone=ZONE)


@contextmanager
def open_env(tmp_path: Path) -> Iterator[Env]:
    """Use from a per-file fixture: `with open_env(tmp_path) as e: yield e`."""
    with run_emulator(tmp_path / "sp", tmp_path / "dev", token="unit-token", templates=TEMPLATES,
                      use_loop=False) as sp:
        cs = FakeCloudStack()
        settings = FakeSettings()
        agent = FakeAgent(sp)
        clock = Clock()
        pools = PoolsFile((pool_spec(sp, "ssd", POOL_A, "pool-a"), pool_spec(sp, "hybrid", POOL_B, "pool-b")))
        ctx = DriverContext(pools=pools, cloudstack=cs, settings=settings, agents=FakeAgents(agent),  # type: ignore[arg-type]
                            clock=clock, sleep=clock.sleep, conn_options={"retries": 1, "backoff": 0.0})
        yield Env(ctx, sp, cs, settings, agent, clock)
