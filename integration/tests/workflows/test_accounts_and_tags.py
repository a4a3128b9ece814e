"""Management-server behaviour that reaches StorPool, through `cs` with the plugin running: a
pool registered as StorPool's lifecycle registers it, storage tags deciding where volumes go,
an account's deletion taking its VMs and volumes with it, VMs answering their NIC."""

from __future__ import annotations

from typing import Any

import cs
import pytest

from integration.stack import LocalStack
from integration.tests.workflows.support import GiB, one, sp_volume, template, with_image

pytestmark = pytest.mark.root

ACCOUNT = {"email": "t@example.org", "firstname": "T", "lastname": "User", "password": "password"}


def test_a_registered_pool_answers_what_storpools_lifecycle_makes(stack: LocalStack, cloud: cs.CloudStack) -> None:
    """StorPoolPrimaryDataStoreLifeCycle.initialize: type StorPool, path SP_DEV_PATH, and the
    pool's name as its tags when none are given."""
    zone = one(cloud, "listZones", "zone")["id"]
    url = f"SP_API_HTTP={stack.sp.host}:{stack.sp.port};SP_AUTH_TOKEN={stack.sp.token};SP_TEMPLATE=nvme"
    pool = cloud.createStoragePool(zoneid=zone, name="sp-nvme", url=url, provider="StorPool", scope="zone",
                                   hypervisor="KVM", capacitybytes=1 << 40)["storagepool"]
    assert (pool["type"], pool["path"], pool["tags"]) == ("StorPool", "/dev/storpool-byid/", "sp-nvme")
    tagged = cloud.createStoragePool(zoneid=zone, name="sp-hdd", provider="StorPool", tags="slow",
                                     url=url.replace("nvme", "hdd"), capacitybytes=1 << 40)["storagepool"]
    assert tagged["tags"] == "slow"


def test_storage_tags_decide_where_new_volumes_go(stack: LocalStack, cloud: cs.CloudStack, sp: Any) -> None:
    """The allocator places a volume only on a pool holding every tag of its offering; retagging
    a pool (updateStoragePool) moves where the next volume goes."""
    zone = one(cloud, "listZones", "zone")["id"]
    primary, hybrid = stack.pool_id("storpool-primary"), stack.pool_id("storpool-hybrid")
    off = cloud.createDiskOffering(name="fast", disksize=1, tags="fast")["diskoffering"]
    cloud.updateStoragePool(id=hybrid, tags="fast")
    first = cloud.createVolume(name="v1", zoneid=zone, diskofferingid=off["id"])["volume"]
    vm = one(cloud, "listVirtualMachines", "virtualmachine", name="vm2")  # stopped, its ROOT on primary
    placed = cloud.attachVolume(id=first["id"], virtualmachineid=vm["id"])["volume"]
    assert placed["storageid"] == hybrid and sp_volume(sp, placed["path"]).templateName == "hybrid"
    cloud.updateStoragePool(id=hybrid, tags="")
    cloud.updateStoragePool(id=primary, tags="fast,ssd")
    second = cloud.createVolume(name="v2", zoneid=zone, diskofferingid=off["id"])["volume"]
    placed = cloud.attachVolume(id=second["id"], virtualmachineid=vm["id"])["volume"]
    assert placed["storageid"] == primary and sp_volume(sp, placed["path"]).templateName == "ssd"
    cloud.updateStoragePool(id=primary, tags="ssd")
    third = cloud.createVolume(name="v3", zoneid=zone, diskofferingid=off["id"])["volume"]
    try:
        cloud.attachVolume(id=third["id"], virtualmachineid=vm["id"])
        raise AssertionError("a volume whose tags no pool holds was placed")
    except cs.CloudStackException as exc:
        assert "Unable to find suitable primary storage" in str(exc)


def test_deleting_an_account_removes_its_vms_and_volumes(stack: LocalStack, cloud: cs.CloudStack, sp: Any) -> None:
    tpl = template(cloud)
    with_image(stack, tpl)
    acc = cloud.createAccount(username="owner", roleid="4", **ACCOUNT)["account"]
    svc = cloud.createServiceOffering(name="svc", cpunumber=1, cpuspeed=500, memory=512)["serviceoffering"]
    vm = cloud.deployVirtualMachine(zoneid=tpl["zoneid"], templateid=tpl["id"], serviceofferingid=svc["id"],
                                    name="owned", account="owner", domainid=acc["domainid"],
                                    rootdisksize=2, details=[{"rootdisksize": "1"}])["virtualmachine"]
    assert vm["account"] == "owner" and vm["nic"][0]["ipaddress"].startswith("127.10.")
    assert one(cloud, "listVirtualMachines", "virtualmachine", id=vm["id"])["nic"] == vm["nic"]
    data = cloud.createVolume(name="owned-data", zoneid=tpl["zoneid"], account="owner", domainid=acc["domainid"],
                              diskofferingid=one(cloud, "listDiskOfferings", "diskoffering", name="sp-small")["id"],
                              virtualmachineid=vm["id"])["volume"]
    root = one(cloud, "listVolumes", "volume", virtualmachineid=vm["id"], type="ROOT", listall=True)
    assert root["size"] == 1 * GiB  # GB; the details map's rootdisksize before the parameter
    paths = [root["path"], data["path"]]
    assert all(sp_volume(sp, p) is not None for p in paths)

    cloud.deleteAccount(id=acc["id"])
    assert cloud.listAccounts(name="owner") == {}
    assert cloud.listVirtualMachines(listall=True, name="owned") == {}
    assert cloud.listVolumes(listall=True, name="owned-data") == {}
    assert all(sp_volume(sp, p) is None for p in paths)


def test_override_disk_offering_is_the_root_disks_offering(stack: LocalStack, cloud: cs.CloudStack, sp: Any) -> None:
    """deployVirtualMachine's `overridediskofferingid` replaces the service offering's disk
    offering for the ROOT disk: its details (SP_TEMPLATE) reach the plugin, its tags place it."""
    tpl = template(cloud)
    with_image(stack, tpl)
    svc = cloud.createServiceOffering(name="svc", cpunumber=1, cpuspeed=500, memory=512)["serviceoffering"]
    tier = cloud.createDiskOffering(name="tier2", customized=True, tags="storpool-primary")["diskoffering"]
    cloud.addResourceDetail(resourceid=tier["id"], resourcetype="DiskOffering",
                            details=[{"key": "SP_TEMPLATE", "value": "ssd2"}])
    vm = cloud.deployVirtualMachine(zoneid=tpl["zoneid"], templateid=tpl["id"], serviceofferingid=svc["id"],
                                    name="tiered", overridediskofferingid=tier["id"],
                                    details=[{"rootdisksize": "1"}])["virtualmachine"]
    root = one(cloud, "listVolumes", "volume", virtualmachineid=vm["id"], type="ROOT")
    assert root["diskofferingid"] == tier["id"] and root["storageid"] == stack.pool_id("storpool-primary")
    assert sp_volume(sp, root["path"]).templateName == "ssd2"
