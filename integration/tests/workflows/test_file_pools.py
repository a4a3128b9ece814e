"""Pools of other kinds than StorPool (an NFS export, a Ceph RBD pool), backed by files, and moving
volumes from them onto StorPool: what CloudStack answers (CloudStackPrimaryDataStoreLifeCycleImpl,
VolumeApiServiceImpl.migrateVolume, StorPoolDataMotionStrategy) and which plugin calls each move
makes, with the data checked on StorPool. Through `cs`, without guests (the guest's side is
`test_guest_livemigrate.py`)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import cs
import pytest

from integration.stack import LocalStack
from integration.tests.cloudstack_sim.test_orchestration_order import calls_during
from integration.tests.workflows.conftest import cloud, sp  # noqa: F401  (re-exported fixtures)
from integration.tests.workflows.support import BYID, one, sp_volume, template, volumes_of, with_image

pytestmark = pytest.mark.root

MARK = b"written on the NFS pool"


def nfs_vm(stack: LocalStack, cloud: cs.CloudStack, name: str) -> tuple[dict[str, Any], dict[str, Any]]:  # noqa: F811
    """An NFS pool tagged `nfs`, and a running VM whose ROOT disk the tagged offering puts there."""
    pool = cloud.createStoragePool(name="nfs", url="nfs://127.0.0.1/export/primary", zoneid=stack.zone_id,
                                   scope="zone", hypervisor="KVM", tags="nfs")["storagepool"]
    svc = cloud.createServiceOffering(name="nfs", displaytext="nfs", cpunumber=1, cpuspeed=500, memory=512,
                                      tags="nfs")["serviceoffering"]
    tpl = template(cloud)
    with_image(stack, tpl)
    vm = cloud.deployVirtualMachine(zoneid=stack.zone_id, templateid=tpl["id"], serviceofferingid=svc["id"],
                                    name=name)["virtualmachine"]
    return pool, vm


def pool_file(stack: LocalStack, pool: dict[str, Any], vol: dict[str, Any]) -> Path:
    return stack.file_pools / pool["id"] / vol["path"]


def mark(path: Path) -> None:
    """Write MARK at offset 1 MiB of a qcow2 volume file (through qemu-io, as a guest would)."""
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 1M 4k", str(path)], check=True,
                   capture_output=True)


def test_nfs_and_rbd_pools_as_cloudstack_answers_them(stack: LocalStack, cloud: cs.CloudStack) -> None:  # noqa: F811
    nfs = cloud.createStoragePool(name="nfs", url="nfs://10.1.1.5/export/primary", zoneid=stack.zone_id,
                                  tags="nfs")["storagepool"]
    rbd = cloud.createStoragePool(name="ceph", url="rbd://admin:c2VjcmV0@10.1.1.6/cloudstack",
                                  zoneid=stack.zone_id, tags="ceph")["storagepool"]
    assert (nfs["type"], nfs["path"], nfs["provider"], nfs["tags"]) == (
        "NetworkFilesystem", "/export/primary", "DefaultPrimary", "nfs")
    assert (rbd["type"], rbd["path"], rbd["provider"]) == ("RBD", "cloudstack", "DefaultPrimary")
    listed = {p["name"]: p for p in cloud.listStoragePools()["storagepool"]}
    assert listed["nfs"]["id"] == nfs["id"] and listed["ceph"]["type"] == "RBD"
    assert (stack.file_pools / nfs["id"]).is_dir()  # the hosts mounted it
    # A URL of these kinds without its path is refused, naming the URL; nothing is created.
    with pytest.raises(cs.CloudStackApiException) as exc:
        cloud.createStoragePool(name="bad", url="nfs://10.1.1.5", zoneid=stack.zone_id)
    assert exc.value.response.status_code == 431 and "nfs://10.1.1.5" in exc.value.error["errortext"]
    assert "bad" not in {p["name"] for p in cloud.listStoragePools()["storagepool"]}
    # A volume on a pool of another kind is the KVM agent's file: no plugin call makes or deletes it.
    disk = cloud.createDiskOffering(name="ceph-data", displaytext="ceph", disksize=1, tags="ceph")["diskoffering"]
    vol: dict[str, Any] = {}
    calls = calls_during(stack, lambda: vol.update(cloud.createVolume(
        name="c", zoneid=stack.zone_id, diskofferingid=disk["id"], storageid=rbd["id"])["volume"]))
    assert calls == []
    assert (vol["storageid"], vol["path"]) == (rbd["id"], vol["id"])
    assert pool_file(stack, rbd, vol).stat().st_size == 1 << 30  # a raw RBD image of the offering's size
    assert calls_during(stack, lambda: cloud.deleteVolume(id=vol["id"])) == []
    assert not pool_file(stack, rbd, vol).exists()


def test_offline_move_from_nfs_onto_storpool_keeps_the_data(stack: LocalStack, cloud: cs.CloudStack,  # noqa: F811
                                                           sp: Any) -> None:  # noqa: F811
    pool, vm = nfs_vm(stack, cloud, "nfs-offline")
    root = volumes_of(cloud, vm["id"])[0]
    assert (root["storageid"], root["path"]) == (pool["id"], root["id"])
    cloud.stopVirtualMachine(id=vm["id"])
    mark(pool_file(stack, pool, root))
    sp_pool = stack.pool_id()

    calls = calls_during(stack, lambda: cloud.migrateVolume(volumeid=root["id"], storageid=sp_pool))
    # Through the image store: the StorPool volume made and filled by an agent, then tagged.
    assert [op for op, _ in calls] == ["import_volume", "volume_attached"]
    assert calls[0][1]["source"]["path"] == f"volumes/2/{root['id']}/{root['id']}.qcow2"
    moved = one(cloud, "listVolumes", "volume", id=root["id"])
    assert moved["storageid"] == sp_pool and moved["path"].startswith(BYID)
    assert not pool_file(stack, pool, root).exists()  # the source expunged
    assert not (stack.secondary / calls[0][1]["source"]["path"]).exists()  # the image-store copy removed
    assert sp_volume(sp, moved["path"]) is not None
    assert stack.sp.read_object(moved["path"][len(BYID):], 1 << 20, 4096) == b"\x5a" * 4096
    cloud.startVirtualMachine(id=vm["id"])  # it starts from StorPool now
    assert one(cloud, "listVirtualMachines", "virtualmachine", id=vm["id"])["state"] == "Running"


def test_running_vm_moves_with_its_volume_in_storpools_order(stack: LocalStack, cloud: cs.CloudStack,  # noqa: F811
                                                            sp: Any) -> None:  # noqa: F811
    pool, vm = nfs_vm(stack, cloud, "nfs-live")
    root = volumes_of(cloud, vm["id"])[0]
    sp_pool = stack.pool_id()
    # migrateVolume cannot do it on KVM (VolumeApiServiceImpl.migrateVolume): the job fails, 431.
    with pytest.raises(cs.CloudStackApiException) as exc:
        cloud.migrateVolume(volumeid=root["id"], storageid=sp_pool, livemigrate=True)
    assert "Use 'migrateVirtualMachineWithVolumes' instead" in str(exc.value.error)
    # The same host is refused: a migration with storage moves the VM too.
    with pytest.raises(cs.CloudStackApiException) as exc:
        cloud.migrateVirtualMachineWithVolume(virtualmachineid=vm["id"], hostid=vm["hostid"],
                                              migrateto=[{"volume": root["id"], "pool": sp_pool}])
    assert "doesn't involve migrating the volumes" in str(exc.value.error)

    dest = next(h["id"] for h in cloud.listHosts(type="Routing")["host"] if h["id"] != vm["hostid"])
    calls = calls_during(stack, lambda: cloud.migrateVirtualMachineWithVolume(
        virtualmachineid=vm["id"], hostid=dest, migrateto=[{"volume": root["id"], "pool": sp_pool}]))
    moved = one(cloud, "listVolumes", "volume", id=root["id"])
    # StorPoolDataMotionStrategy.copyAsync: create, connect on the destination (ModifyTargets);
    # no PrepareForMigration reaches the plugin (the VM had no StorPool disk); after the copy the
    # new volume is tagged with its VM.
    assert [op for op, _ in calls] == ["create_volume", "connect_physical_disk", "volume_attached"]
    assert calls[0][1]["pool"] == sp_pool and calls[0][1]["volume_uuid"] == root["id"]
    assert calls[1][1] == {"host_id": dest, "path": moved["path"]}
    assert moved["storageid"] == sp_pool and sp_volume(sp, moved["path"]) is not None
    assert not pool_file(stack, pool, root).exists()
    assert one(cloud, "listVirtualMachines", "virtualmachine", id=vm["id"])["hostid"] == dest


def test_a_failed_move_leaves_the_volume_on_nfs_and_nothing_on_storpool(stack: LocalStack,
                                                                       cloud: cs.CloudStack, sp: Any) -> None:  # noqa: F811
    pool, vm = nfs_vm(stack, cloud, "nfs-fail")
    root = volumes_of(cloud, vm["id"])[0]
    dest = next(h["id"] for h in cloud.listHosts(type="Routing")["host"] if h["id"] != vm["hostid"])
    before = {v.name for v in sp.volumesList()}
    stack.cs.model.migration_faults.append("migration to the destination failed: connection reset")
    with pytest.raises(cs.CloudStackApiException) as exc:
        cloud.migrateVirtualMachineWithVolume(virtualmachineid=vm["id"], hostid=dest,
                                              migrateto=[{"volume": root["id"], "pool": stack.pool_id()}])
    assert "connection reset" in str(exc.value.error)
    after = one(cloud, "listVolumes", "volume", id=root["id"])
    assert (after["storageid"], after["path"]) == (pool["id"], root["id"])
    assert pool_file(stack, pool, root).exists()
    assert {v.name for v in sp.volumesList()} == before
    assert one(cloud, "listVirtualMachines", "virtualmachine", id=vm["id"])["hostid"] == vm["hostid"]


def test_the_stack_seeds_an_nfs_and_a_ceph_pool_once(stack: LocalStack, cloud: cs.CloudStack) -> None:  # noqa: F811
    """`python -m integration up` adds the pools CloudStack's StorPool tests look up by name."""
    assert stack.seed_file_pools() == ["nfs", "ceph"]
    assert stack.seed_file_pools() == []
    pools = {p["name"]: p for p in cloud.listStoragePools()["storagepool"]}
    assert (pools["nfs"]["type"], pools["nfs"]["tags"]) == ("NetworkFilesystem", "nfs")
    assert (pools["ceph"]["type"], pools["ceph"]["tags"]) == ("RBD", "ceph")


def test_the_stack_seeds_an_ssd_disk_offering_once(stack: LocalStack, cloud: cs.CloudStack) -> None:  # noqa: F811
    """`python -m integration up` adds the disk offering `ssd` CloudStack's StorPool tests look up
    by name (MigrateVolumeToStorPool), as an operator makes it: custom size, storage tag `ssd`."""
    assert cloud.listDiskOfferings(name="ssd") == {}
    assert stack.seed_disk_offerings() == ["ssd"]
    assert stack.seed_disk_offerings() == []
    found = cloud.listDiskOfferings(name="ssd")["diskoffering"]
    assert [(o["tags"], o["iscustomized"], o["storagetype"]) for o in found] == [("ssd", True, "shared")]


def test_stopped_vm_moves_from_nfs_onto_storpool_with_migrate_virtual_machine(
        stack: LocalStack, cloud: cs.CloudStack, sp: Any) -> None:  # noqa: F811
    """migrateVirtualMachine with `storageid` moves a stopped VM's volumes (CloudStack's StorPool
    tests do it from their NFS pool), each the offline way."""
    pool, vm = nfs_vm(stack, cloud, "nfs-stopped")
    cloud.stopVirtualMachine(id=vm["id"], forced=True)
    root = volumes_of(cloud, vm["id"])[0]
    mark(pool_file(stack, pool, root))
    cloud.migrateVirtualMachine(virtualmachineid=vm["id"], storageid=stack.pool_id())
    for vol in volumes_of(cloud, vm["id"]):
        assert vol["storageid"] == stack.pool_id()
        assert sp.volumeList(volumeName="~" + vol["path"].split("/")[3])  # as the tests look it up
    moved = volumes_of(cloud, vm["id"])[0]
    assert stack.sp.read_object(moved["path"][len(BYID):], 1 << 20, 4096) == b"\x5a" * 4096
