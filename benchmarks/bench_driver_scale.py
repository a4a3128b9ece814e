"""The driver's tag scans at scale: garbage collection over 10,000
cached templates and 50,000 snapshots, `vm_destroyed` among 10,000 volumes, and the other
operations that find objects by tag. Each row prints the StorPool and CloudStack calls sent and
the driver's own time beside the goal.

"Driver's own time" is the CPU time of the calling thread (`time.thread_time`): the driver
and the bindings parsing the answers, without the emulator and simulator, which run in other
threads of this process. The emulator is filled directly through its object model (setting
the stage, not measured) and does not write its state file here: its own per-change cost is
a separate benchmark's subject.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cloudstack_storpool.cloudstack.client import CloudStackClient
from cloudstack_storpool.driver import gc, pools, templates, vmsnapshots, volumes
from cloudstack_storpool.driver.agents import AgentDirectory
from cloudstack_storpool.driver.context import DriverContext
from cloudstack_storpool.poolconfig import PoolsFile, PoolSpec, Secret
from cloudstack_storpool.settings.store import Settings
from integration.cloudstack_sim.testing import run_simulator
from integration.stack import new_uuid
from integration.storpool_sim.model import Model, SpObject
from integration.storpool_sim.testing import run_emulator

CACHED_TEMPLATES = 10_000
TEMPLATES_DELETED = 100
"""Of the cached templates, how many CloudStack no longer has (GC's work)."""
SNAPSHOTS = 50_000
VOLUMES = 10_000
VM_DISKS = 3


def _add(model: Model, *, snapshot: bool, name: str, tags: dict[str, str], parent: str | None = None) -> str:
    gid, vid = model._new_gid()
    model.objects[gid] = SpObject(gid=gid, vid=vid, name=name, snapshot=snapshot, size=1 << 30, parent=parent,
                                  template="ssd", replication=3, place_all="ssd", place_tail="ssd", place_head="ssd",
                                  tags=tags, created=int(time.time()), on_volume="" if not snapshot else "gone")
    model.by_name[name] = gid
    return gid


def _populate(model: Model, pool: str, vm_id: str, vmsnap: str, kept: list[str], deleted: list[str]) -> None:
    model.persist = False
    for tid in kept + deleted:
        _add(model, snapshot=True, name=f"cs-tmpl-{tid}-{pool}", tags={"uuid": tid, "cs": "template", "pool": pool})
    for i in range(SNAPSHOTS):
        _add(model, snapshot=True, name=f"cs-snap-{new_uuid()}",
             tags={"uuid": new_uuid(), "cs": "snapshot", "pool": pool, **({"cvm": vm_id} if i % 1000 == 0 else {})})
    for i in range(VOLUMES):
        tags = {"uuid": new_uuid(), "cs": "volume", "pool": pool}
        if i < VM_DISKS:
            tags.update({"cvm": vm_id, "disk": str(i), "vc-policy": "gold"})
        _add(model, snapshot=False, name=f"cs-vol-{tags['uuid']}", tags=tags)
    for _ in range(VM_DISKS):
        _add(model, snapshot=True, name=f"cs-vms-{vmsnap}-{new_uuid()}",
             tags={"uuid": vmsnap, "cs": "group", "cvm": vm_id, "pool": pool})


class _CountingCloudStack(CloudStackClient):
    """The facade, counting the commands it sends (paged lists count once per page)."""

    sent: Counter[str]

    def _call(self, command: str, **params: Any) -> Any:
        self.sent[command] += 1
        return super()._call(command, **params)


def _row(ctx: DriverContext, cs: _CountingCloudStack, what: str, goal: str, run: Callable[[], Any]) -> dict[str, Any]:
    sp_before, cs_before = dict(ctx.api_calls()), Counter(cs.sent)
    wall, cpu = time.perf_counter(), time.thread_time()
    run()
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    sp = {k: v - sp_before.get(k, 0) for k, v in ctx.api_calls().items() if v != sp_before.get(k, 0)}
    lists = sum(v for k, v in sp.items() if k.endswith("List"))
    return {"operation": what, "storpool calls": json.dumps(sp, sort_keys=True), "storpool lists": lists,
            "cloudstack commands": json.dumps(dict(cs.sent - cs_before), sort_keys=True),
            "driver s": round(cpu, 3), "wall s": round(wall, 3), "goal": goal}


def main() -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        with run_emulator(root / "sp", root / "dev", token="bench-token", use_loop=False) as sp, \
                run_simulator() as sim:
            return _run(sp, sim)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run(sp: Any, sim: Any) -> dict[str, object]:
    zone = next(iter(sim.model.zones.values()))
    sim_pool = sim.model.add_storage_pool("bench-pool", zone.id)
    kept = [sim.model.add_template(f"t{i}", 1 << 30, template_id=new_uuid()).id
            for i in range(CACHED_TEMPLATES - TEMPLATES_DELETED)]
    deleted = [new_uuid() for _ in range(TEMPLATES_DELETED)]
    vm = next(iter(sim.model.vms.values()))
    vmsnap = new_uuid()
    with sp.model.lock:
        _populate(sp.model, sim_pool.id, vm.id, vmsnap, kept, deleted)
    cs = _CountingCloudStack(sim.endpoint, sim.key, sim.secret, poll_interval=0.02, job_timeout=10.0)
    cs.sent = Counter()
    spec = PoolSpec(host=sp.host, port=sp.port, token=Secret(sp.token), template="ssd", uuid=sim_pool.id,
                    name="bench-pool", zone=zone.id)
    ctx = DriverContext(pools=PoolsFile((spec,)), cloudstack=cs, settings=Settings(cs, ttl=600),
                        agents=AgentDirectory(cs, "bench-agent-token"))
    ctx.settings.get("storpool.gc.temporary.age")  # settings are cached: not this benchmark's subject

    report: dict[str, Any] = {}
    rows = [
        _row(ctx, cs, f"gc plan: {CACHED_TEMPLATES} cached templates ({TEMPLATES_DELETED} deleted), "
             f"{SNAPSHOTS} snapshots, {VOLUMES} volumes",
             "<= 3 StorPool lists, 1 paged listTemplates (+1 listTemplates per deleted template), "
             "< 2 s driver time", lambda: report.setdefault("gc", gc.run(ctx, dry_run=True))),
        _row(ctx, cs, f"vm_destroyed among {VOLUMES} volumes ({VM_DISKS} of the VM)",
             f"1 VolumesList + {VM_DISKS} VolumeUpdate", lambda: volumes.vm_destroyed(ctx, vm.id)),
        _row(ctx, cs, f"list_cached ({CACHED_TEMPLATES} caches among {CACHED_TEMPLATES + SNAPSHOTS} snapshots)",
             "1 SnapshotsList", lambda: templates.list_cached(ctx, spec)),
        _row(ctx, cs, "pools.contents", "1 VolumesList + 1 SnapshotsList", lambda: pools.contents(ctx, spec)),
        _row(ctx, cs, "delete a VM snapshot of a VM CloudStack no longer has",
             f"1 SnapshotsList + {VM_DISKS} x (VolumesReassign + SnapshotDelete)",
             lambda: vmsnapshots.delete_vm_snapshot(ctx, vm_uuid=new_uuid(), vm_snapshot_uuid=vmsnap)),
    ]
    found = report["gc"]
    for r in rows:
        print(f"{r['operation']:<100} | {r['storpool calls']:<70} | {r['cloudstack commands']:<40} | "
              f"{r['driver s']:>7} s | goal: {r['goal']}")
    return {
        "rows": rows,
        "gc_planned": len(found.planned),
        "gc_kept_templates": found.kept_templates,
        "gc_errors": len(found.errors),
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2, default=str))
