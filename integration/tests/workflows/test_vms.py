"""Deploying, starting, stopping, migrating and destroying VMs through CloudStack's API."""

from __future__ import annotations

from typing import Any

import cs
import pytest

from integration.stack import LocalStack
from integration.tests.workflows.support import (
    BYID,
    deploy,
    offering,
    one,
    sp_volume,
    template,
    vm_with_data_disk,
    volumes_of,
    with_image,
)

pytestmark = pytest.mark.root


def test_two_vms_from_one_template_copy_it_once(stack: LocalStack, cloud: cs.CloudStack, sp: Any) -> None:
    tpl = template(cloud)
    with_image(stack, tpl)
    vm1 = deploy(cloud, tpl, "web-1")
    vm2 = deploy(cloud, tpl, "web-2")
    assert vm1["state"] == vm2["state"] == "Running"
    roots = [volumes_of(cloud, vm["id"])[0] for vm in (vm1, vm2)]
    assert all(r["type"] == "ROOT" and r["path"].startswith(BYID) for r in roots)
    on_sp = [sp_volume(sp, r["path"]) for r in roots]
    assert all(v is not None for v in on_sp)
    # One copy from the image store, then both roots are children of the same cached snapshot.
    assert len(stack.agent_jobs("copy_template")) == 1
    assert on_sp[0].parentName == on_sp[1].parentName and on_sp[0].parentName
    for vm, v in zip((vm1, vm2), on_sp, strict=True):
        assert v.tags["cvm"] == vm["id"] and v.tags["disk"] == "0"
        # The VM's host has the disk attached (the start connected it there).
        host_client = stack.agents[vm["hostid"]].client_id
        attached = {int(a.client) for a in sp.attachmentsList() if a.volume == v.name}
        assert attached == {host_client}


def test_vm_snapshot_take_revert_delete(stack: LocalStack, cloud: cs.CloudStack, sp: Any) -> None:
    vm = vm_with_data_disk(stack, cloud, "app-snap")
    disks = [sp_volume(sp, v["path"]) for v in volumes_of(cloud, vm["id"])]
    for d in disks:
        stack.sp.write_object(d.globalId, 0, b"before")
    vms = cloud.createVMSnapshot(virtualmachineid=vm["id"], name="pre-upgrade")["vmsnapshot"]
    assert vms["state"] == "Ready" and vms["type"] == "Disk"
    members = [s for s in sp.snapshotsList() if s.tags.get("uuid") == vms["id"]]
    assert len(members) == len(disks) == 2 and all(s.tags.get("cvm") == vm["id"] for s in members)
    for d in disks:
        stack.sp.write_object(d.globalId, 0, b"after!")

    with pytest.raises(cs.CloudStackApiException) as refused:
        cloud.revertToVMSnapshot(vmsnapshotid=vms["id"])  # running: a disk-only snapshot needs it stopped
    assert refused.value.error["errorcode"] == 431
    cloud.stopVirtualMachine(id=vm["id"])
    cloud.revertToVMSnapshot(vmsnapshotid=vms["id"])
    for v in volumes_of(cloud, vm["id"]):
        assert stack.sp.read_object(sp_volume(sp, v["path"]).globalId, 0, 6) == b"before"

    cloud.deleteVMSnapshot(vmsnapshotid=vms["id"])
    assert cloud.listVMSnapshot(virtualmachineid=vm["id"]) == {}
    assert all(s.deleted for s in sp.snapshotsList() if s.tags.get("uuid") == vms["id"])


def test_stop_start_and_live_migrate(stack: LocalStack, cloud: cs.CloudStack, sp: Any) -> None:
    """On StorPool's side: a running VM's volumes are attached to its
    host's client only; stopped, to none; live-migrated, to the target only; a failed
    migration leaves them on the source only."""
    hosts = cloud.listHosts(type="Routing")["host"]
    first, second = hosts[0]["id"], hosts[1]["id"]
    client = {h: stack.agents[h].client_id for h in (first, second)}
    vm = vm_with_data_disk(stack, cloud, "mover", hostid=first)
    names = [sp_volume(sp, v["path"]).name for v in volumes_of(cloud, vm["id"])]
    assert len(names) == 2

    def attached() -> list[set[int]]:
        """Per volume of the VM, the StorPool clients it is attached to (AttachmentsList)."""
        found = sp.attachmentsList()
        return [{int(a.client) for a in found if a.volume == name} for name in names]

    assert vm["hostid"] == first and attached() == [{client[first]}] * 2
    moved = cloud.migrateVirtualMachine(virtualmachineid=vm["id"], hostid=second)["virtualmachine"]
    assert moved["hostid"] == second and moved["state"] == "Running"
    assert attached() == [{client[second]}] * 2

    # The hypervisors fail the move: the job fails, the guest and its disks stay on the source.
    stack.cs.model.migration_faults.append("operation failed: migration job: unexpectedly failed")
    with pytest.raises(cs.CloudStackApiException) as failed:
        cloud.migrateVirtualMachine(virtualmachineid=vm["id"], hostid=first)
    assert failed.value.error["errorcode"] == 530 and "migration job" in failed.value.error["errortext"]
    assert one(cloud, "listVirtualMachines", "virtualmachine", id=vm["id"])["hostid"] == second
    assert attached() == [{client[second]}] * 2

    stopped = cloud.stopVirtualMachine(id=vm["id"])["virtualmachine"]
    assert stopped["state"] == "Stopped" and "hostid" not in stopped
    assert attached() == [set(), set()]
    started = cloud.startVirtualMachine(id=vm["id"], hostid=first)["virtualmachine"]
    assert started["state"] == "Running" and started["hostid"] == first
    assert attached() == [{client[first]}] * 2
    assert cloud.rebootVirtualMachine(id=vm["id"])["virtualmachine"]["state"] == "Running"
    assert attached() == [{client[first]}] * 2


def test_a_start_elsewhere_takes_the_disks_from_the_old_host(stack: LocalStack, cloud: cs.CloudStack,
                                                             sp: Any) -> None:
    """The HA case: the disk is still attached to a host the VM no longer runs on (its host was
    lost before it could let go); a start on another host detaches it there first."""
    hosts = cloud.listHosts(type="Routing")["host"]
    first, second = hosts[0]["id"], hosts[1]["id"]
    tpl = template(cloud)
    with_image(stack, tpl)
    vm = deploy(cloud, tpl, "survivor", hostid=first)
    disk = sp_volume(sp, volumes_of(cloud, vm["id"])[0]["path"])
    cloud.stopVirtualMachine(id=vm["id"])
    # The old host's client still holds the disk, as after a crash (StorPool's own API).
    sp.volumesReassign(json=[{"volume": disk.name, "rw": [stack.agents[first].client_id]}])
    cloud.startVirtualMachine(id=vm["id"], hostid=second)
    assert {int(a.client) for a in sp.attachmentsList() if a.volume == disk.name} == {stack.agents[second].client_id}


def test_a_destination_that_cannot_attach_leaves_the_vm_on_its_source(stack: LocalStack, cloud: cs.CloudStack,
                                                                       sp: Any) -> None:
    """PrepareForMigrationCommand fails (StorPool refuses the destination's attach): the job
    fails, the VM stays on its source, and its disks are attached there only."""
    hosts = cloud.listHosts(type="Routing")["host"]
    first, second = hosts[0]["id"], hosts[1]["id"]
    vm = vm_with_data_disk(stack, cloud, "stays", hostid=first)
    names = [sp_volume(sp, v["path"]).name for v in volumes_of(cloud, vm["id"])]
    stack.sp.faults.fail_next("VolumesReassignWait", error="notAllowed", descr="attach refused for the test")
    with pytest.raises(cs.CloudStackApiException) as failed:
        cloud.migrateVirtualMachine(virtualmachineid=vm["id"], hostid=second)
    assert failed.value.error["errorcode"] == 530 and "prepare_migration failed" in failed.value.error["errortext"]
    assert one(cloud, "listVirtualMachines", "virtualmachine", id=vm["id"])["hostid"] == first
    found = sp.attachmentsList()
    assert [{int(a.client) for a in found if a.volume == n} for n in names] == [{stack.agents[first].client_id}] * 2


def test_a_stop_whose_disconnect_fails_still_stops(stack: LocalStack, cloud: cs.CloudStack, sp: Any) -> None:
    """CloudStack ignores the result of the KVM agent's disk cleanup: the VM stops even when
    its host cannot let go of a disk, and the next start elsewhere takes the disk over."""
    hosts = cloud.listHosts(type="Routing")["host"]
    first, second = hosts[0]["id"], hosts[1]["id"]
    tpl = template(cloud)
    with_image(stack, tpl)
    vm = deploy(cloud, tpl, "sticky", hostid=first)
    name = sp_volume(sp, volumes_of(cloud, vm["id"])[0]["path"]).name
    stack.sp.faults.fail_next("VolumesReassignWait", 50, error="notAllowed", descr="detach refused for the test")
    stack.sp.faults.fail_next("VolumesReassign", 50, error="notAllowed", descr="detach refused for the test")
    try:
        assert cloud.stopVirtualMachine(id=vm["id"])["virtualmachine"]["state"] == "Stopped"
        assert {int(a.client) for a in sp.attachmentsList() if a.volume == name} == {stack.agents[first].client_id}
    finally:
        stack.sp.faults.reset()
    cloud.startVirtualMachine(id=vm["id"], hostid=second)
    assert {int(a.client) for a in sp.attachmentsList() if a.volume == name} == {stack.agents[second].client_id}


def test_attach_and_detach_on_a_running_vm_connect_its_host(stack: LocalStack, cloud: cs.CloudStack,
                                                            sp: Any) -> None:
    tpl = template(cloud)
    with_image(stack, tpl)
    vm = deploy(cloud, tpl, "hotplug")
    host_client = stack.agents[vm["hostid"]].client_id
    vol = cloud.createVolume(name="hot", zoneid=vm["zoneid"], diskofferingid=offering(cloud, "sp-small"),
                             virtualmachineid=vm["id"])["volume"]
    name = sp_volume(sp, vol["path"]).name

    def clients() -> set[int]:
        return {int(a.client) for a in sp.attachmentsList() if a.volume == name}

    assert clients() == {host_client}
    cloud.detachVolume(id=vol["id"])
    assert clients() == set()
    cloud.attachVolume(id=vol["id"], virtualmachineid=vm["id"])
    assert clients() == {host_client}


def test_destroy_with_expunge_then_delete_the_template(stack: LocalStack, cloud: cs.CloudStack, sp: Any) -> None:
    base = template(cloud)
    with_image(stack, base)
    vm = deploy(cloud, base, "short-lived")
    root = volumes_of(cloud, vm["id"])[0]
    data = cloud.createVolume(name="keeps", zoneid=vm["zoneid"], diskofferingid=offering(cloud, "sp-small"),
                              virtualmachineid=vm["id"])["volume"]
    cloud.stopVirtualMachine(id=vm["id"])
    tpl = cloud.createTemplate(name="short-tpl", displaytext="t", ostypeid="1", volumeid=root["id"])["template"]
    cache = [s.name for s in sp.snapshotsList() if s.tags.get("uuid") == tpl["id"]]
    assert len(cache) == 1

    cloud.destroyVirtualMachine(id=vm["id"], expunge=True)
    assert cloud.listVirtualMachines(id=None, name="short-lived") == {}
    assert sp_volume(sp, root["path"]) is None  # the ROOT volume is gone with the VM
    left = sp_volume(sp, data["path"])  # the data disk outlives it, untagged
    assert left is not None and not left.tags.get("cvm")
    assert one(cloud, "listVolumes", "volume", id=data["id"]).get("virtualmachineid") is None

    # Deleting the template: CloudStack's storage cleanup evicts it from the pool.
    cloud.deleteTemplate(id=tpl["id"])
    assert not [s for s in sp.snapshotsList() if s.name in cache and not s.deleted]
    assert not [p for p in stack.secondary_files() if tpl["id"] in p]


def test_vm_tag_becomes_vc_policy(stack: LocalStack, cloud: cs.CloudStack, sp: Any) -> None:
    vm = vm_with_data_disk(stack, cloud, "tagged")
    paths = [v["path"] for v in volumes_of(cloud, vm["id"])]
    cloud.createTags(resourceids=vm["id"], resourcetype="UserVm", tags=[{"key": "vc-policy", "value": "gold"}])
    assert all(sp_volume(sp, p).tags.get("vc-policy") == "gold" for p in paths)
    cloud.deleteTags(resourceids=vm["id"], resourcetype="UserVm", tags=[{"key": "vc-policy"}])
    assert all(not sp_volume(sp, p).tags.get("vc-policy") for p in paths)


def test_a_failed_deploy_reports_the_plugins_error(stack: LocalStack, cloud: cs.CloudStack, sp: Any) -> None:
    tpl = template(cloud, "debian-12")  # registered, but its image is missing from the image store
    with pytest.raises(cs.CloudStackApiException) as failed:
        deploy(cloud, tpl, "no-image")
    err = failed.value.error
    assert err["errorcode"] == 530 and err["errortext"].startswith("cache_template failed")
    vm = one(cloud, "listVirtualMachines", "virtualmachine", name="no-image")
    assert vm["state"] == "Error"
    # Nothing is left on StorPool by the failed fill.
    assert not [v for v in sp.volumesList() if v.tags.get("uuid") == tpl["id"]]


def test_volumes_are_made_on_first_start_and_go_on_expunge(stack: LocalStack, cloud: cs.CloudStack, sp: Any) -> None:
    tpl = template(cloud)
    with_image(stack, tpl)
    vm = deploy(cloud, tpl, "later", startvm=False)
    assert vm["state"] == "Stopped"
    root = volumes_of(cloud, vm["id"])[0]
    assert root["state"] == "Allocated" and "path" not in root  # nothing on StorPool yet
    before = len(sp.volumesList())
    cloud.startVirtualMachine(id=vm["id"])
    root = volumes_of(cloud, vm["id"])[0]
    assert root["state"] == "Ready" and sp_volume(sp, root["path"]) is not None
    assert len(sp.volumesList()) == before + 1

    # Stopped, its disks move to another pool with the VM (migrateVirtualMachine storageid=...).
    cloud.stopVirtualMachine(id=vm["id"])
    target = one(cloud, "listStoragePools", "storagepool", name="storpool-hybrid")
    cloud.migrateVirtualMachine(virtualmachineid=vm["id"], storageid=target["id"])
    root = volumes_of(cloud, vm["id"])[0]
    assert root["storageid"] == target["id"] and sp_volume(sp, root["path"]).templateName == "hybrid"

    destroyed = cloud.destroyVirtualMachine(id=vm["id"])["virtualmachine"]
    assert destroyed["state"] == "Destroyed"
    assert sp_volume(sp, root["path"]) is not None  # recoverable until expunged
    cloud.expungeVirtualMachine(id=vm["id"])
    assert sp_volume(sp, root["path"]) is None
    assert cloud.listVirtualMachines(name="later") == {}


def test_the_service_offering_shapes_the_root_volume(stack: LocalStack, cloud: cs.CloudStack, sp: Any) -> None:
    tpl = template(cloud)
    with_image(stack, tpl)
    fast = cloud.deployVirtualMachine(zoneid=tpl["zoneid"], templateid=tpl["id"], name="fast",
                                      serviceofferingid=offering(cloud, "medium-iops", disk=False))["virtualmachine"]
    hybrid = cloud.deployVirtualMachine(zoneid=tpl["zoneid"], templateid=tpl["id"], name="hybrid",
                                        serviceofferingid=offering(cloud, "hybrid-root", disk=False))["virtualmachine"]
    assert sp_volume(sp, volumes_of(cloud, fast["id"])[0]["path"]).iops == 1000
    assert sp_volume(sp, volumes_of(cloud, hybrid["id"])[0]["path"]).templateName == "hybrid"
