"""A running guest's volumes move from an NFS pool onto StorPool while the guest writes: CloudStack's
migrateVirtualMachineWithVolume to another host, which StorPoolDataMotionStrategy serves (the new
StorPool volumes created and connected on the destination, the disks block-copied while the guest
runs, then the switch). Through `cs`, against the simulator, the driver service, the agents, the
StorPool emulator and a real guest under libvirt."""

from __future__ import annotations

import re
from typing import Any

import cs
import pytest

from integration.stack import LocalStack
from integration.tests.workflows.support import BYID, one, sp_volume, template, volumes_of
from integration.tests.workflows.test_guests import gcloud, guest_stack, nic_ip, ssh  # noqa: F401

pytestmark = [pytest.mark.libvirt, pytest.mark.root, pytest.mark.slow]

SECTOR = 512
WRITER = ("i=0; while [ ! -e /tmp/stop ]; do i=$((i+1)); "
          "printf 'count-%08d' $i | dd of=/dev/vdb bs=512 seek=$i count=1 conv=sync,notrunc,fsync 2>/dev/null; "
          "echo $i > /tmp/counter; sleep 0.05; done; echo $i > /tmp/final")
"""The guest's writer: sector i of its data disk holds `count-<i>`, written and flushed one by
one until /tmp/stop appears; /tmp/counter is the last one written."""


def counter(ip: str) -> int:
    return int(ssh(ip, "cat /tmp/counter").strip() or 0)


def other_host(cloud: cs.CloudStack, host_id: str) -> str:
    hosts = cloud.listHosts(type="Routing").get("host", [])
    return str(next(h["id"] for h in hosts if h["id"] != host_id and h["state"] == "Up"))


def test_running_guests_volumes_move_from_nfs_onto_storpool_with_the_writes_made_during_the_copy(
        guest_stack: LocalStack, gcloud: cs.CloudStack) -> None:  # noqa: F811
    zone = guest_stack.zone_id
    nfs = gcloud.createStoragePool(name="nfs", url="nfs://127.0.0.1/export/primary", zoneid=zone, scope="zone",
                                   hypervisor="KVM", tags="nfs")["storagepool"]
    assert (nfs["type"], nfs["path"], nfs["provider"]) == ("NetworkFilesystem", "/export/primary", "DefaultPrimary")
    svc = gcloud.createServiceOffering(name="nfs", displaytext="nfs", cpunumber=1, cpuspeed=500, memory=512,
                                       tags="nfs")["serviceoffering"]
    disk = gcloud.createDiskOffering(name="nfs-data", displaytext="nfs", disksize=1, tags="nfs")["diskoffering"]
    tpl = template(gcloud)
    vm = gcloud.deployVirtualMachine(zoneid=zone, templateid=tpl["id"], serviceofferingid=svc["id"],
                                     diskofferingid=disk["id"], name="nfs-guest")["virtualmachine"]
    ip = nic_ip(gcloud, vm["id"])
    root, data = volumes_of(gcloud, vm["id"])
    files = guest_stack.file_pools / nfs["id"]
    for vol in (root, data):  # on the NFS pool as files named by the volume's uuid
        assert (vol["storageid"], vol["path"]) == (nfs["id"], vol["id"])
        assert (files / vol["id"]).is_file()

    assert ssh(ip, "echo before-move > /tmp/random.data; sync; cat /tmp/random.data").strip() == "before-move"
    ssh(ip, f"sh -c '{WRITER}' >/dev/null 2>&1 </dev/null &")
    before = counter(ip)
    while before < 5:
        before = counter(ip)

    sp_pool = guest_stack.pool_id()
    dest = other_host(gcloud, vm["hostid"])
    moved = gcloud.migrateVirtualMachineWithVolume(
        virtualmachineid=vm["id"], hostid=dest,
        migrateto=[{"volume": root["id"], "pool": sp_pool}, {"volume": data["id"], "pool": sp_pool}],
    )["virtualmachine"]
    after = counter(ip)
    assert (moved["state"], moved["hostid"]) == ("Running", dest)
    assert after > before, "the guest wrote while the volumes moved"
    ssh(ip, "touch /tmp/stop; while [ ! -e /tmp/final ]; do sleep 0.1; done")
    last = int(ssh(ip, "cat /tmp/final").strip())
    print(f"sectors written: {before} before the move, {after - before} during it, {last} in all")

    # CloudStack's records: the same volumes, now on the StorPool pool under StorPool paths.
    sp = guest_stack.sp.api()
    for vol in volumes_of(gcloud, vm["id"]):
        assert vol["storageid"] == sp_pool and vol["path"].startswith(BYID), vol
        assert sp_volume(sp, vol["path"]) is not None
        assert not (files / vol["id"]).exists()  # the source volume was expunged
    new_data = one(gcloud, "listVolumes", "volume", id=data["id"])
    # StorPool's side: every sector the guest wrote, before and during the copy, in order.
    gid = new_data["path"][len(BYID):]
    written = guest_stack.sp.read_object(gid, 0, (last + 1) * SECTOR)
    found = [written[i * SECTOR:i * SECTOR + 14] for i in range(1, last + 1)]
    assert found == [f"count-{i:08d}".encode() for i in range(1, last + 1)]

    # The guest kept running on the new devices and reads what it wrote.
    domain: Any = guest_stack.guests.guests._libvirt().lookupByName(f"cssp-guest-{vm['id']}")  # type: ignore[union-attr]
    sources = re.findall(r"<source (?:dev|file)='([^']+)'", domain.XMLDesc(0))
    assert all(s.startswith("/dev/") for s in sources), sources
    assert ssh(ip, "cat /tmp/random.data").strip() == "before-move"
    assert ssh(ip, f"dd if=/dev/vdb bs=512 skip={last} count=1 2>/dev/null | head -c 14") == f"count-{last:08d}"

