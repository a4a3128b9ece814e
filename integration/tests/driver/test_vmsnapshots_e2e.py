"""VM snapshot of a VM whose three disks are being written by concurrent threads through their
attached (loop) devices, on the local stack: revert brings all three back to the snapshot's
instant, and keeps the `cvm`, `disk`, `vc-policy` tags and the iops limits."""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from pathlib import Path

import pytest

from cloudstack_storpool.driver import vmsnapshots, volumes
from cloudstack_storpool.spconn import Ref
from integration.needs import need_root
from integration.stack import LocalStack, new_uuid

pytestmark = pytest.mark.root

MiB = 1 << 20
BLOCK = 4096


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Writers:
    """One thread per device writing numbered blocks (O_DSYNC) until stopped; `quiesce()` holds
    them all between writes, as a guest's filesystem freeze would, and `resume()` lets them go."""

    def __init__(self, devices: list[str]) -> None:
        self.devices = devices
        self.cond = threading.Condition()
        self.hold = False
        self.held = 0
        self.stop = False
        self.writes = [0] * len(devices)
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(len(devices))]

    def _run(self, i: int) -> None:
        try:
            fd = os.open(self.devices[i], os.O_WRONLY | os.O_DSYNC)
        except OSError as exc:
            self.errors.append(exc)
            return
        try:
            n = 0
            while True:
                with self.cond:
                    if self.hold:
                        self.held += 1
                        self.cond.notify_all()
                        while self.hold and not self.stop:
                            self.cond.wait()
                        self.held -= 1
                    if self.stop:
                        return
                n += 1
                block = f"disk{i} write {n} ".encode().ljust(BLOCK, b"#")
                os.pwrite(fd, block, (n * 7 % 1024) * BLOCK)
                self.writes[i] = n
        except OSError as exc:
            self.errors.append(exc)
        finally:
            os.close(fd)

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def quiesce(self) -> None:
        with self.cond:
            self.hold = True
            assert self.cond.wait_for(lambda: self.held == len(self.threads) or self.errors, timeout=10)

    def resume(self) -> None:
        with self.cond:
            self.hold = False
            self.cond.notify_all()

    def finish(self) -> None:
        with self.cond:
            self.stop = True
            self.hold = False
            self.cond.notify_all()
        for t in self.threads:
            t.join(timeout=10)


def test_vm_snapshot_of_three_busy_disks_reverts_to_one_instant(stack: LocalStack) -> None:
    need_root()
    model = stack.cs.model
    kvm1 = next(h for h in model.hosts.values() if h.details.get("SP_OURID") == "1")
    vm = model.add_vm(f"busy-{uuid.uuid4().hex[:6]}", host_id=kvm1.id, state="Running", storage_id=stack.pool_id(),
                      tags={"vc-policy": "nightly-backup"})
    for vol in [v for v in model.volumes.values() if v.vm_id == vm.id]:
        model.delete_volume(vol.id)  # its disks are made below, on StorPool
    disks = []
    for device_id in range(3):
        vid = new_uuid()
        info = volumes.create(stack.ctx, stack.pool_id(), vid, 8 * MiB, iops=100 * (device_id + 1))
        model.add_volume(f"disk-{device_id}", 8 * MiB, vm_id=vm.id, device_id=device_id, storage_id=stack.pool_id(),
                         path=info.path, volume_id=vid, max_iops=100 * (device_id + 1))
        volumes.attached(stack.ctx, stack.pool_id(), vid, vm_id=vm.id, device_id=device_id)
        disks.append((vid, info.global_id))
    conn = stack.ctx.conn(stack.pool_id())
    for _, gid in disks:
        conn.attach(Ref("volume", "~" + gid), 1, "rw")
    devices = [str(stack.sp.device_path(1, gid)) for _, gid in disks]
    files = [stack.sp.object_file(gid) for _, gid in disks]

    writers = Writers(devices)
    writers.start()
    try:
        time.sleep(0.3)
        writers.quiesce()
        counts_at_snapshot = list(writers.writes)
        at_snapshot = [sha(f) for f in files]
        vms_uuid = new_uuid()
        taken = vmsnapshots.take_vm_snapshot(stack.ctx, vm_uuid=vm.id, vm_snapshot_uuid=vms_uuid)
        writers.resume()
        time.sleep(0.3)
    finally:
        writers.finish()
    assert not writers.errors, writers.errors
    assert all(c > 0 for c in counts_at_snapshot)
    assert all(now > then for now, then in zip(writers.writes, counts_at_snapshot, strict=True))
    assert [sha(stack.sp.object_file(m.global_id)) for m in taken.members] == at_snapshot
    assert all(sha(f) != h for f, h in zip(files, at_snapshot, strict=True))  # the disks moved on

    model.stop_vm(vm.id)
    vmsnapshots.revert_vm_snapshot(stack.ctx, vm_uuid=vm.id, vm_snapshot_uuid=vms_uuid)
    assert [sha(stack.sp.object_file(gid)) for _, gid in disks] == at_snapshot
    for device_id, (_, gid) in enumerate(disks):
        summary = conn.volume("~" + gid)
        assert summary.tags["cvm"] == vm.id
        assert summary.tags["disk"] == str(device_id)
        assert summary.tags["vc-policy"] == "nightly-backup"
        assert summary.iops == 100 * (device_id + 1)
    assert conn.attachments() == []

    vmsnapshots.delete_vm_snapshot(stack.ctx, vm_uuid=vm.id, vm_snapshot_uuid=vms_uuid)
    assert not conn.find_snapshots({"uuid": vms_uuid})
