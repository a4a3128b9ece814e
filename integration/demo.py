"""`python -m integration demo`: the whole mission, end to end, on the local stack.

Each step does what a user or operator does through CloudStack's API, with the `cs` client
(the commands are printed), and the simulator calls the plugin as CloudStack's storage
subsystem would; then it checks the result on the systems themselves (StorPool's API and the
emulator's backing files, qemu-img, libvirt) rather than trusting any answer. The demo exits
non-zero if any check fails.
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
import cs

from cloudstack_storpool.driver import gc, vmsnapshots
from cloudstack_storpool.heartbeat.check import CheckConfig, HeartbeatChecker, HostTarget
from integration.libvirt_domain import running_domain
from integration.stack import BYPASS_SETTING, LocalStack, new_uuid

MiB = 1 << 20
GiB = 1 << 30
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
    """The demo's steps. Each drives CloudStack's API with the `cs` client, as a user would
    (the commands are printed), and checks StorPool's side through its API and data."""

    stack: LocalStack
    echo: Callable[[str], None]
    pool: str = ""
    template_id: str = ""
    results: list[StepResult] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    cloud: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.stack.cs.model.plugin is None:
            self.stack.start_service()  # the simulator's storage commands call the plugin through it
        self.cloud = cs.CloudStack(self.stack.cs.endpoint, self.stack.cs.key, self.stack.cs.secret,
                                   fetch_result=True, poll_interval=0.02, job_timeout=300)

    # -- helpers ------------------------------------------------------------------------------

    def cs(self, command: str, *, show: bool = True, **params: Any) -> Any:
        """One CloudStack API command through `cs`, noted as a user would type it."""
        if show:
            shown = []
            for k, v in params.items():
                if isinstance(v, list):
                    shown += [f"{k}[{i}].{kk}={vv}" for i, item in enumerate(v) for kk, vv in item.items()]
                else:
                    shown.append(f"{k}={v}")
            self.commands.append(f"cs {command} {' '.join(shown)}")
        return getattr(self.cloud, command)(**params)

    def copies(self) -> int:
        return sum(1 for j in self.stack.agent_jobs() if j.command.startswith("copy"))

    def summary(self, gid: str) -> Any:
        """The volume as StorPool's API shows it (not as the driver reported it)."""
        found = self.stack.sp.api().volumeList("~" + gid)
        if not found:
            raise CheckFailed(f"volume ~{gid} is missing from StorPool")
        return found[0]

    @staticmethod
    def gid(path: str) -> str:
        """The StorPool global id in the path CloudStack stores (`/dev/storpool-byid/<globalId>`)."""
        return path.rsplit("/", 1)[-1]

    def measured(self, work: Callable[[], T]) -> tuple[T, Counter[str]]:
        """What `work` returned, and every StorPool query the driver sent for it, by name."""
        before = Counter(self.stack.ctx.api_calls())
        out = work()
        return out, Counter(self.stack.ctx.api_calls()) - before

    def offering(self, name: str, command: str = "listDiskOfferings", key: str = "diskoffering") -> str:
        return str(self.cs(command, show=False, name=name)[key][0]["id"])

    def zone(self) -> str:
        return str(self.cs("listZones", show=False)["zone"][0]["id"])

    def ensure_template(self) -> str:
        """The demo's own template (the seeded tiny-linux's size), registered as CloudStack
        holds a registered template: a record and an image on the image store."""
        if not self.template_id:
            size = next(t.size for t in self.stack.cs.model.templates.values() if t.name == "tiny-linux")
            tmpl = self.stack.cs.model.add_template(f"tiny-linux-{new_uuid()[:8]}", size, template_id=new_uuid())
            self.stack.template_image(tmpl.id, tmpl.size, {0: b"MBR-of-tiny-linux", 40 * MiB: b"rootfs block"})
            self.template_id = tmpl.id
        return self.template_id

    def deploy(self, name: str, *, show: bool = True) -> dict[str, Any]:
        res = self.cs("deployVirtualMachine", show=show, zoneid=self.zone(), templateid=self.ensure_template(),
                      serviceofferingid=self.offering("small", "listServiceOfferings", "serviceoffering"), name=name)
        return dict(res["virtualmachine"])

    def volumes_of(self, vm_id: str) -> list[dict[str, Any]]:
        found = self.cs("listVolumes", show=False, virtualmachineid=vm_id).get("volume", [])
        return sorted(found, key=lambda v: v.get("deviceid", 0))

    def data_disk(self, offering: str, **where: Any) -> dict[str, Any]:
        return dict(self.cs("createVolume", name=f"demo-{new_uuid()[:6]}", zoneid=self.zone(),
                            diskofferingid=self.offering(offering), **where)["volume"])

    def set_bypass(self, on: bool) -> None:
        self.cs("updateConfiguration", name=BYPASS_SETTING, value="true" if on else "false")
        time.sleep(self.stack.settings_ttl + 0.1)  # past the plugin's settings cache

    # -- the steps ----------------------------------------------------------------------------

    def template_cache(self) -> list[str]:
        self.template_id = ""  # a template of its own, so the step can run again on one stack
        copies0 = self.copies()
        tag = new_uuid()[:4]
        first = self.deploy(f"web-{tag}-0")
        rest, calls = self.measured(lambda: [self.deploy(f"web-{tag}-{i}", show=False) for i in range(1, 20)])
        self.commands.append(f"... and 19 more deployVirtualMachine (web-{tag}-1 .. web-{tag}-19)")
        roots = [self.volumes_of(vm["id"])[0] for vm in [first, *rest]]
        gids = [self.gid(r["path"]) for r in roots]
        return [
            check(self.copies() - copies0 == 1, "20 VMs from one template: 1 agent copy from the image store"),
            check(calls == Counter({"VolumeCreate": 19, "VolumeUpdate": 19}),
                  "after the first, each VM's root volume is exactly 2 StorPool calls, a VolumeCreate (a child of "
                  f"the cached template) and a VolumeUpdate (its VM's tags) (all StorPool calls for 19: {dict(calls)})"),
            check(all(self.stack.sp.read_object(g, 0, 17) == b"MBR-of-tiny-linux"
                      and self.stack.sp.read_object(g, 40 * MiB, 12) == b"rootfs block" for g in gids),
                  "every root volume reads back the template's content"),
            check(all(r["path"].startswith("/dev/storpool-byid/") for r in roots),
                  "CloudStack stores the path the plugin returned: /dev/storpool-byid/<globalId>"),
        ]

    def snapshot_bypass(self) -> list[str]:
        vm = self.deploy(f"db-{new_uuid()[:4]}")
        root = self.volumes_of(vm["id"])[0]
        self.stack.sp.write_object(self.gid(root["path"]), 5 * MiB, b"snapshot me")
        self.set_bypass(False)
        snap = self.cs("createSnapshot", volumeid=root["id"])["snapshot"]
        on_sp = [x for x in self.stack.sp.api().snapshotsList() if (x.tags or {}).get("uuid") == snap["id"]]
        backups = [self.stack.secondary / p for p in self.stack.secondary_files() if snap["id"] in p]
        cmp = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2",
                              str(self.stack.sp.object_file(on_sp[0].globalId)), str(backups[0])],
                             capture_output=True, check=False) if on_sp and backups else None
        out = [
            check(len(backups) == 1 and len(on_sp) == 1,
                  "bypass=false: a StorPool snapshot, and a qcow2 backup on the image store"),
            check(cmp is not None and cmp.returncode == 0, "qemu-img compare: backup equals the StorPool snapshot"),
        ]
        self.set_bypass(True)
        snap2 = self.cs("createSnapshot", volumeid=root["id"])["snapshot"]
        out.append(check(not [p for p in self.stack.secondary_files() if snap2["id"] in p]
                         and any((x.tags or {}).get("uuid") == snap2["id"] for x in self.stack.sp.api().snapshotsList()),
                         "bypass=true (flipped via updateConfiguration): kept on StorPool, nothing on the image store"))
        self.snap = (root["id"], snap["id"], on_sp[0].globalId)
        return out

    def volume_from_snapshot(self) -> list[str]:
        _, sid, snap_gid = self.snap
        copies0 = self.copies()
        made = self.cs("createVolume", name=f"restored-{new_uuid()[:4]}", snapshotid=sid)["volume"]
        gid = self.gid(made["path"])
        snap_name = self.stack.sp.api().snapshotList("~" + snap_gid)[0].name
        parent = self.summary(gid).parentName
        return [
            check(self.stack.sp.read_object(gid, 5 * MiB, 11) == b"snapshot me",
                  "new volume reads the snapshot's content"),
            check(self.copies() == copies0 and parent == snap_name,
                  f"no agent copy: the volume is a StorPool child of the snapshot (parentName {parent})"),
        ]

    def resize_running(self) -> list[str]:
        vm = self.deploy(f"app-{new_uuid()[:4]}")
        vol = self.data_disk("sp-small", virtualmachineid=vm["id"])  # attached on the VM's host
        gid = self.gid(vol["path"])
        host = self.stack.agents[vm["hostid"]]
        device = self.stack.sp.device_path(host.client_id, gid)
        with running_domain(vm["instancename"], str(device)) as dom:
            before = dom.blockInfo("vdb", 0)[0]
            self.cs("resizeVolume", id=vol["id"], size=12)
            after = dom.blockInfo("vdb", 0)[0]
        return [
            check(before == 10 * GiB, "running domain sees 10 GiB before"),
            check(after == 12 * GiB, "libvirt domblkinfo capacity = 12 GiB right after the resize"),
            check(self.summary(gid).size == 12 * GiB, "StorPool size = 12 GiB"),
        ]

    def iops(self) -> list[str]:
        gid = self.gid(self.data_disk("sp-iops-500", storageid=self.pool)["path"])
        iops = self.summary(gid).iops
        gid2 = self.gid(self.data_disk("sp-gold", storageid=self.pool)["path"])
        tags = self.summary(gid2).tags or {}
        return [
            check(iops == 500, f"disk offering max IOPS 500 -> StorPool iops {iops}"),
            check(tags.get("qc") == "gold", "SP_QOSCLASS=gold -> tag qc=gold"),
        ]

    def vm_snapshot(self) -> list[str]:
        vm = self.deploy(f"demo-vm-{new_uuid()[:4]}")
        self.cs("createTags", resourceids=vm["id"], resourcetype="UserVm",
                tags=[{"key": "vc-policy", "value": "gold-backup"}])
        for _ in range(2):
            self.data_disk("sp-small", virtualmachineid=vm["id"])
        self.cs("stopVirtualMachine", id=vm["id"])  # a disk-only VM snapshot is reverted on a stopped VM
        disks = [self.gid(v["path"]) for v in self.volumes_of(vm["id"])]
        for i, gid in enumerate(disks):
            self.stack.sp.write_object(gid, MiB, f"disk {i} before".encode())

        def group(vsid: str) -> list[str]:
            """The disk of every snapshot StorPool holds tagged as this VM snapshot (a second
            group would list each disk twice)."""
            return sorted(s.onVolume for s in self.stack.sp.api().snapshotsList()
                          if (s.tags or {}).get("uuid") == vsid and (s.tags or {}).get("cs") == "group")

        disk_names = sorted(self.summary(gid).name for gid in disks)
        taken, first = self.measured(lambda: self.cs("createVMSnapshot", virtualmachineid=vm["id"])["vmsnapshot"])
        vsid = taken["id"]
        members_first = group(vsid)
        # The plugin call retried, as after a lost answer: the same VM snapshot again.
        again, retake = self.measured(lambda: vmsnapshots.take_vm_snapshot(self.stack.ctx, vm_uuid=vm["id"],
                                                                           vm_snapshot_uuid=vsid))
        members_again = group(vsid)
        for i, gid in enumerate(disks):
            self.stack.sp.write_object(gid, MiB, f"disk {i} AFTER!".encode())
        self.cs("revertToVMSnapshot", vmsnapshotid=vsid)
        return [
            check(first["VolumesGroupSnapshot"] == 1 and len(disks) == 3 and members_first == disk_names,
                  f"one VolumesGroupSnapshot over 3 disks ({first['VolumesGroupSnapshot']} sent, "
                  f"snapshots of {len(members_first)} disks)"),
            check(retake["VolumesGroupSnapshot"] == 1 and again.recovered and members_again == members_first,
                  "a retried take makes no second group (its one VolumesGroupSnapshot is refused: the members "
                  f"exist; {len(members_again)} snapshots in the group)"),
            check(all(self.stack.sp.read_object(gid, MiB, len(f"disk {i} before")) == f"disk {i} before".encode()
                      for i, gid in enumerate(disks)), "revert restores all 3 disks to the same instant"),
            check(all((self.summary(gid).tags or {}).get("cvm") == vm["id"]
                      and (self.summary(gid).tags or {}).get("vc-policy") == "gold-backup" for gid in disks),
                  "tags cvm and vc-policy (the VM's tag) survive the revert"),
        ]

    def template_gc(self) -> list[str]:
        template_id = self.ensure_template()
        conn = self.stack.ctx.conn(self.pool)
        cached = lambda: [s for s in conn.find_snapshots({"uuid": template_id, "cs": "template"})]  # noqa: E731
        before = len(cached())
        gc.run(self.stack.ctx)  # the plugin's GC (what the service runs every storpool.gc.interval): a real run
        kept = len(cached())
        self.cs("deleteTemplate", id=template_id, forced="true")
        self.template_id = ""
        dry2 = gc.run(self.stack.ctx, dry_run=True)
        still = len(cached())
        gc.run(self.stack.ctx)
        return [
            check(before >= 1 and kept == before, "template in use: a real GC run keeps its cache"),
            check(bool(dry2.planned) and still == before,
                  "deleted while VMs use it: CloudStack's cleanup keeps the cache; a GC dry run lists it, deletes nothing"),
            check(not cached(), "template deleted in CloudStack -> after a GC run its cached snapshot is gone from StorPool"),
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
        from cloudstack_storpool.agentapi.client import AgentClient

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
            self.commands = []
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
            for c in self.commands:
                self.echo(f"         $ {c}")
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
