"""`python -m integration demo`: the whole mission, end to end, on the local stack.

Each step does something an operator would do through CloudStack, then checks the result on
the systems themselves (the emulator's backing files, qemu-img, libvirt, the simulator) rather
than trusting the driver's own answer. The demo exits non-zero if any check fails.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click

from cloudstack_storpool.driver import gc, resize, snapshots, vmsnapshots, volumes
from cloudstack_storpool.driver.snapshots import SecondaryLocation
from cloudstack_storpool.heartbeat.check import CheckConfig, HeartbeatChecker, HostTarget
from cloudstack_storpool.spconn import Ref
from integration.libvirt_domain import running_domain
from integration.stack import LocalStack, new_uuid

MiB = 1 << 20
T = TypeVar("T")


class CheckFailed(AssertionError):
    pass


def check(ok: bool, what: str) -> str:
    if not ok:
        raise CheckFailed(what)
    return what


@dataclass
class StepResult:
    name: str
    ok: bool
    seconds: float
    checks: list[str] = field(default_factory=list)
    error: str = ""


@dataclass
class Demo:
    stack: LocalStack
    echo: Callable[[str], None]
    pool: str = ""
    template_id: str = ""
    results: list[StepResult] = field(default_factory=list)

    # -- helpers ------------------------------------------------------------------------------

    def copies(self) -> int:
        return sum(1 for j in self.stack.agent_jobs() if j.command.startswith("copy"))

    def volume(self, size: int, *, vm_id: str | None = None, device_id: int | None = None,
               disk_offering_id: str | None = None) -> tuple[str, str]:
        vid = new_uuid()
        info = volumes.create(self.stack.ctx, self.pool, vid, size, disk_offering_id=disk_offering_id)
        self.stack.cs.model.add_volume(f"demo-{vid[:8]}", size, vm_id=vm_id, device_id=device_id,
                                       storage_id=self.pool, path=info.path, volume_id=vid,
                                       disk_offering_id=disk_offering_id)
        if vm_id is not None and device_id is not None:
            volumes.attached(self.stack.ctx, self.pool, vid, vm_id=vm_id, device_id=device_id)
        return vid, info.global_id

    def summary(self, gid: str) -> Any:
        """The volume as StorPool's API shows it (not as the driver reported it)."""
        found = self.stack.sp.api().volumeList("~" + gid)
        if not found:
            raise CheckFailed(f"volume ~{gid} is missing from StorPool")
        return found[0]

    def measured(self, work: Callable[[], T]) -> tuple[T, Counter[str]]:
        """What `work` returned, and every StorPool query the driver sent for it, by name."""
        before = Counter(self.stack.ctx.api_calls())
        out = work()
        return out, Counter(self.stack.ctx.api_calls()) - before

    def vm(self, name: str) -> Any:
        return next(v for v in self.stack.cs.model.vms.values() if v.name == name)

    def offering(self, name: str) -> str:
        return next(o.id for o in self.stack.cs.model.disk_offerings.values() if o.name == name)

    # -- the steps ----------------------------------------------------------------------------

    def template_cache(self) -> list[str]:
        # A template of its own (the seeded tiny-linux's size), so the step can run again on one stack.
        size = next(t.size for t in self.stack.cs.model.templates.values() if t.name == "tiny-linux")
        tmpl = self.stack.cs.model.add_template(f"tiny-linux-{new_uuid()[:8]}", size, template_id=new_uuid())
        self.template_id = tmpl.id
        image = self.stack.template_image(tmpl.id, tmpl.size, {0: b"MBR-of-tiny-linux", 40 * MiB: b"rootfs block"})
        source = self.stack.source_of(image)
        copies0 = self.copies()

        def root_volume() -> volumes.VolumeInfo:
            return volumes.create_from_template(self.stack.ctx, self.pool, new_uuid(), tmpl.id, source=source)

        first = root_volume()
        rest, calls = self.measured(lambda: [root_volume() for _ in range(19)])
        made = [first, *rest]
        return [
            check(self.copies() - copies0 == 1, "20 root volumes from one template: 1 agent copy"),
            check(calls == Counter({"VolumeCreate": 19}),
                  f"after the first, each root volume is exactly 1 StorPool call, a VolumeCreate "
                  f"(all StorPool calls for 19: {dict(calls)})"),
            check(all(self.stack.sp.read_object(v.global_id, 0, 17) == b"MBR-of-tiny-linux"
                      and self.stack.sp.read_object(v.global_id, 40 * MiB, 12) == b"rootfs block" for v in made),
                  "every root volume reads back the template's content"),
        ]

    def snapshot_bypass(self) -> list[str]:
        vid, gid = self.volume(32 * MiB)
        self.stack.sp.write_object(gid, 5 * MiB, b"snapshot me")
        self.stack.set_bypass(False, wait=True)
        sid = self.stack.cs.model.add_snapshot(vid).id
        where = SecondaryLocation(str(self.stack.secondary), f"snapshots/{vid}/{sid}.qcow2")
        info = snapshots.take_snapshot(self.stack.ctx, volume_uuid=vid, snapshot_uuid=sid, secondary=where)
        backup = self.stack.secondary / where.path
        cmp = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2",
                              str(self.stack.sp.object_file(info.global_id)), str(backup)],
                             capture_output=True, check=False)
        out = [
            check(backup.is_file() and not info.bypassed, "bypass=false: qcow2 backup written to secondary"),
            check(cmp.returncode == 0, "qemu-img compare: backup equals the StorPool snapshot"),
        ]
        self.stack.set_bypass(True, wait=True)
        sid2 = self.stack.cs.model.add_snapshot(vid).id
        where2 = SecondaryLocation(str(self.stack.secondary), f"snapshots/{vid}/{sid2}.qcow2")
        info2 = snapshots.take_snapshot(self.stack.ctx, volume_uuid=vid, snapshot_uuid=sid2, secondary=where2)
        out.append(check(info2.bypassed and not (self.stack.secondary / where2.path).exists(),
                         "bypass=true (flipped via updateConfiguration): nothing written to secondary "
                         f"(decided by {info2.decided_by})"))
        self.snap = (vid, sid, info.global_id)
        return out

    def volume_from_snapshot(self) -> list[str]:
        _, sid, snap_gid = self.snap
        copies0 = self.copies()
        made = snapshots.volume_from_snapshot(self.stack.ctx, pool=self.pool, snapshot_uuid=sid, volume_uuid=new_uuid())
        snap_name = self.stack.sp.api().snapshotList("~" + snap_gid)[0].name
        parent = self.summary(made.global_id).parentName
        return [
            check(self.stack.sp.read_object(made.global_id, 5 * MiB, 11) == b"snapshot me",
                  "new volume reads the snapshot's content"),
            check(self.copies() == copies0 and parent == snap_name,
                  f"no agent copy: the volume is a StorPool child of the snapshot (parentName {parent})"),
        ]

    def resize_running(self) -> list[str]:
        vm = self.vm("vm1")
        host = self.stack.agents[vm.host_id]
        vid, gid = self.volume(64 * MiB, vm_id=vm.id, device_id=1)
        conn = self.stack.ctx.conn(self.pool)
        conn.attach(Ref("volume", "~" + gid), host.client_id, "rw")
        device = self.stack.sp.device_path(host.client_id, gid)
        with running_domain(vm.instance_name, str(device)) as dom:
            before = dom.blockInfo("vdb", 0)[0]
            res = resize.resize_volume(self.stack.ctx, volume_uuid=vid, new_size=128 * MiB)
            after = dom.blockInfo("vdb", 0)[0]
        conn.detach(Ref("volume", "~" + gid), host.client_id, force=True)
        sp_size = self.summary(gid).size
        return [
            check(before == 64 * MiB, "running domain sees 64 MiB before"),
            check(res.notified and after == 128 * MiB, "libvirt domblkinfo capacity = 128 MiB right after the resize"),
            check(sp_size == 128 * MiB, "StorPool size = 128 MiB"),
        ]

    def iops(self) -> list[str]:
        _, gid = self.volume(16 * MiB, disk_offering_id=self.offering("sp-iops-500"))
        iops = self.summary(gid).iops
        _, gid2 = self.volume(16 * MiB, disk_offering_id=self.offering("sp-gold"))
        tags = self.summary(gid2).tags or {}
        return [
            check(iops == 500, f"disk offering max IOPS 500 -> StorPool iops {iops}"),
            check(tags.get("qc") == "gold", "SP_QOSCLASS=gold -> tag qc=gold"),
        ]

    def vm_snapshot(self) -> list[str]:
        model = self.stack.cs.model
        vm = model.add_vm("demo-vm", state="Stopped", storage_id=self.pool, root_size=16 * MiB,
                          tags={"vc-policy": "gold-backup"})  # stopped: revert needs a stopped VM
        root = next(v for v in model.volumes.values() if v.vm_id == vm.id)
        info = volumes.create(self.stack.ctx, self.pool, root.id, 16 * MiB)
        model.update_volume(root.id, path=info.path)
        volumes.attached(self.stack.ctx, self.pool, root.id, vm_id=vm.id, device_id=0)
        disks = [(root.id, info.global_id)] + [self.volume(16 * MiB, vm_id=vm.id, device_id=i) for i in (1, 2)]
        for i, (_, gid) in enumerate(disks):
            self.stack.sp.write_object(gid, MiB, f"disk {i} before".encode())
        vsid = new_uuid()

        def take() -> vmsnapshots.VMSnapshotInfo:
            return vmsnapshots.take_vm_snapshot(self.stack.ctx, vm_uuid=vm.id, vm_snapshot_uuid=vsid)

        def group() -> list[str]:
            """The disk of every snapshot StorPool holds tagged as this VM snapshot (a second
            group would list each disk twice)."""
            return sorted(s.onVolume for s in self.stack.sp.api().snapshotsList()
                          if (s.tags or {}).get("uuid") == vsid and (s.tags or {}).get("cs") == "group")

        disk_names = sorted(self.summary(gid).name for _, gid in disks)
        taken, first = self.measured(take)
        members_first = group()
        again, retake = self.measured(take)  # idempotent retake
        members_again = group()
        for i, (_, gid) in enumerate(disks):
            self.stack.sp.write_object(gid, MiB, f"disk {i} AFTER!".encode())
        vmsnapshots.revert_vm_snapshot(self.stack.ctx, vm_uuid=vm.id, vm_snapshot_uuid=vsid)
        return [
            check(first["VolumesGroupSnapshot"] == 1 and len(taken.members) == 3 and members_first == disk_names,
                  f"one VolumesGroupSnapshot over 3 disks ({first['VolumesGroupSnapshot']} sent, "
                  f"snapshots of {len(members_first)} disks)"),
            check(retake["VolumesGroupSnapshot"] == 1 and again.recovered and members_again == members_first,
                  "taking it again makes no second group (its one VolumesGroupSnapshot is refused: the members "
                  f"exist; {len(members_again)} snapshots in the group)"),
            check(all(self.stack.sp.read_object(gid, MiB, len(f"disk {i} before")) == f"disk {i} before".encode()
                      for i, (_, gid) in enumerate(disks)), "revert restores all 3 disks to the same instant"),
            check(all((self.summary(gid).tags or {}).get("cvm") == vm.id
                      and (self.summary(gid).tags or {}).get("vc-policy") == "gold-backup" for _, gid in disks),
                  "tags cvm and vc-policy survive the revert"),
        ]

    def template_gc(self) -> list[str]:
        conn = self.stack.ctx.conn(self.pool)
        cached = lambda: [s for s in conn.find_snapshots({"uuid": self.template_id, "cs": "template"})]  # noqa: E731
        before = len(cached())
        gc.run(self.stack.ctx)  # a real run, not a dry one
        kept = len(cached())
        self.stack.cs.model.delete_template(self.template_id, forced=True)
        dry2 = gc.run(self.stack.ctx, dry_run=True)
        still = len(cached())
        gc.run(self.stack.ctx)
        return [
            check(before >= 1 and kept == before, "template in use: a real GC run keeps its cache"),
            check(bool(dry2.planned) and still == before, "dry run after deletion lists it, deletes nothing"),
            check(not cached(), "template deleted in CloudStack -> its cached snapshot is gone from StorPool"),
        ]

    def heartbeat(self) -> list[str]:
        hosts = [HostTarget(h.name, int(h.details["SP_OURID"]), h.id) for h in self.stack.cs.model.hosts.values()
                 if h.details.get("SP_OURID")]
        pools = list(self.stack.pools().pools)
        clusters = len({p.endpoint for p in pools})
        checker = HeartbeatChecker(pools, CheckConfig(io_window=0.3, io_samples=2))

        def round_() -> tuple[dict[str, str], Counter[str]]:
            """One round's verdicts, and every StorPool query the checker sent for it."""
            before = checker.query_counts()
            verdicts = {v.host.name: v.verdict.value for v in checker.check(hosts)}
            return verdicts, checker.query_counts() - before

        alive, calls_alive = round_()
        self.stack.sp.faults.client_down(2)
        down, calls_down = round_()
        own = self.host_view(2, "fail")
        self.stack.sp.faults.set_client_status(2, "running")
        back = self.host_view(2, "ok")
        return [
            check(set(alive.values()) == {"alive"}, f"all hosts alive: {alive}"),
            check(down.get("kvm2") == "dead" and down.get("kvm1") == "alive",
                  f"kvm2's StorPool client down, no I/O -> {down}"),
            check(own.get("result") == "fail", f"kvm2's own heartbeat loop, read through its agent: {own.get('reason')}"),
            check(back.get("result") == "ok", "after recovery the host's loop reports ok again"),
            check(calls_alive == Counter({"ServicesList": clusters}),
                  f"all alive: one ServicesList per cluster ({len(pools)} pools on {clusters} cluster), nothing else: "
                  f"{dict(calls_alive)}"),
            check(calls_down == Counter({"ServicesList": 2 * clusters, "ClientActiveRequests": 2}),
                  "kvm2 down: one ServicesList per cluster plus one confirming look, 2 active-request samples "
                  f"for kvm2 only: {dict(calls_down)}"),
        ]

    def host_view(self, client_id: int, want: str, timeout: float = 10.0) -> dict[str, Any]:
        """The heartbeat status a host's own loop wrote, as its agent serves it (polled until `want`)."""
        from cloudstack_storpool.agent.client import AgentClient

        agent = AgentClient(self.stack.agent_for_client(client_id).url, self.stack.agent_token,
                            ca_file=str(self.stack.ca.ca_file))
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = agent.heartbeat() or {}
            if status.get("result") == want:
                break
            time.sleep(0.2)
        return status

    def run(self) -> bool:
        self.pool = self.stack.pool_id("storpool-primary")
        steps: list[tuple[str, Callable[[], list[str]]]] = [
            ("template cached once, then cloned", self.template_cache),
            ("snapshot with bypass off, then on", self.snapshot_bypass),
            ("volume from snapshot", self.volume_from_snapshot),
            ("resize seen by a running domain", self.resize_running),
            ("IOPS and QoS class from offerings", self.iops),
            ("VM group snapshot and revert", self.vm_snapshot),
            ("template deletion GC", self.template_gc),
            ("host failing: heartbeat verdict", self.heartbeat),
        ]
        for name, fn in steps:
            start = time.perf_counter()
            try:
                checks, ok, err = fn(), True, ""
            except Exception as exc:
                checks, ok = [], False
                err = f"{type(exc).__name__}: {exc}"
                if not isinstance(exc, CheckFailed):
                    err += "\n" + traceback.format_exc(limit=4)
            res = StepResult(name, ok, time.perf_counter() - start, checks, err)
            self.results.append(res)
            self.echo(f"[{'ok' if ok else 'FAIL':>4}] {name} ({res.seconds:.2f}s)")
            for c in checks:
                self.echo(f"         - {c}")
            if err:
                self.echo(f"         ! {err}")
        return all(r.ok for r in self.results)


@click.command("demo")
@click.option("--root", type=click.Path(path_type=Path), default=None, help="Work directory (default: a temp dir).")
@click.option("--json", "as_json", is_flag=True, help="Print the step results as JSON at the end.")
def demo_cmd(root: Path | None, as_json: bool) -> None:
    """Run the whole mission end to end on the embedded stack, checking every step."""
    base = root or Path(tempfile.mkdtemp(prefix="cloudstack-storpool-demo-"))
    click.echo(f"starting the local stack in {base} ...")
    t0 = time.perf_counter()
    with LocalStack(base, heartbeat_interval=1.0) as stack:
        click.echo(f"stack up in {time.perf_counter() - t0:.2f}s: StorPool emulator {stack.sp.url} "
                   f"(data on {'reflink XFS' if stack.make_xfs else 'sparse files'}), CloudStack {stack.cs.endpoint}, "
                   f"{len(stack.agents)} agents")
        demo = Demo(stack, click.echo)
        ok = demo.run()
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in demo.results], indent=2))
    passed = sum(r.ok for r in demo.results)
    click.echo(f"demo: {passed} of {len(demo.results)} steps passed in {time.perf_counter() - t0:.1f}s")
    if not ok:
        raise SystemExit(1)
