"""Shared set-up of the Driver II unit tests: the real StorPool emulator (sparse files, no loop
devices) and the real CloudStack simulator, with a recording stand-in for the KVM agents so a
test can see exactly which agent commands an operation sent (and make one fail).

Not a conftest: the other test modules import `make_env` explicitly.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudstack_storpool.agent.client import AgentRequestError
from cloudstack_storpool.driver import naming, tags
from cloudstack_storpool.driver.context import DriverContext
from cloudstack_storpool.poolconfig import PoolsFile, PoolSpec, Secret
from cloudstack_storpool.settings.store import Settings
from cloudstack_storpool.spconn import StorPoolConn
from integration.cloudstack_sim.testing import SimHandle
from integration.stack import new_uuid
from integration.storpool_sim.testing import EmulatorHandle, run_emulator

MiB = 1 << 20
GiB = 1 << 30


@dataclass
class FakeAgent:
    """Records every command; `fail` makes the next commands fail like an agent would."""

    base_url: str
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    fail: dict[str, str] = field(default_factory=dict)
    result: dict[str, dict[str, Any]] = field(default_factory=dict)

    def _run(self, command: str, **args: Any) -> dict[str, Any]:
        self.calls.append((command, args))
        if command in self.fail:
            raise AgentRequestError(self.fail[command], code="failed")
        return dict(self.result.get(command, {}))

    def backup_snapshot(self, **args: Any) -> dict[str, Any]:
        return self._run("backup_snapshot", **args) or {"format": "qcow2", "virtual_size": 1, "physical_size": 1}

    def copy_to_volume(self, **args: Any) -> dict[str, Any]:
        return self._run("copy_to_volume", **args) or {"virtual_size": 4 * MiB}

    def copy_template(self, **args: Any) -> dict[str, Any]:
        return self._run("copy_template", **args)

    def resize(self, **args: Any) -> dict[str, Any]:
        return self._run("resize", **args) or {"notified": bool(args.get("vm")), "capacity": args["size"]}


class FakeAgents:
    """Stands in for Driver I's AgentDirectory: one FakeAgent per host id, plus a pool agent."""

    def __init__(self) -> None:
        self.by_host: dict[str, FakeAgent] = {}
        self.pool_agent = FakeAgent("http://pool-agent")

    def for_host(self, host_id: str) -> FakeAgent:
        return self.by_host.setdefault(host_id, FakeAgent(f"http://{host_id}"))

    def run_on_pool(self, pool: PoolSpec, work: Callable[[FakeAgent], Any]) -> Any:
        return work(self.pool_agent)

    def all_calls(self) -> list[tuple[str, dict[str, Any]]]:
        out = list(self.pool_agent.calls)
        for a in self.by_host.values():
            out += a.calls
        return out


@dataclass
class Env:
    sp: EmulatorHandle
    cs: SimHandle
    ctx: DriverContext
    pool: PoolSpec
    agents: FakeAgents
    conn: StorPoolConn

    def set_bypass(self, value: bool) -> None:
        self.cs.client().update_configuration("sp.bypass.secondary.storage", "true" if value else "false")

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
        gid = ref.removeprefix("~") if ref.startswith("~") else self.conn.snapshot(ref) or self.conn.volume(ref)
        if not isinstance(gid, str):
            gid = gid.global_id
        return self.sp.read_object(gid, offset, length)

    def snapshot_names(self) -> set[str]:
        return {s.name for s in self.conn.snapshots() if not s.deleted}

    def volume_names(self) -> set[str]:
        return {v.name for v in self.conn.volumes()}


@contextmanager
def make_env(tmp_path: Path, cs: SimHandle) -> Iterator[Env]:
    with run_emulator(tmp_path / "data", tmp_path / "dev", token=f"tok-{uuid.uuid4().hex}", use_loop=False) as sp:
        sim_pool = next(p for p in cs.model.storage_pools.values() if p.name == "storpool-primary")
        pool = PoolSpec(sp.host, sp.port, Secret(sp.token), "ssd", uuid=sim_pool.id, name=sim_pool.name,
                        zone=sim_pool.zone_id)
        client = cs.client()
        agents = FakeAgents()
        ctx = DriverContext(pools=PoolsFile((pool,)), cloudstack=client, settings=Settings(client, ttl=0),
                            agents=agents,  # type: ignore[arg-type]
                            conn_options={"retries": 2, "backoff": 0.01})
        yield Env(sp, cs, ctx, pool, agents, ctx.conn(pool))
