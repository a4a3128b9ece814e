"""Data disks through CloudStack's API: create, attach, resize, detach, delete, a change of disk
offering, a migration between StorPool pools; each checked on StorPool."""

from __future__ import annotations

from typing import Any

import cs
import pytest

from integration.stack import LocalStack
from integration.tests.workflows.support import (
    GiB,
    deploy,
    job_error,
    offering,
    one,
    sp_volume,
    template,
    with_image,
)

pytestmark = pytest.mark.root


@pytest.fixture
def vm(stack: LocalStack, cloud: cs.CloudStack) -> dict[str, Any]:
    tpl = template(cloud)
    with_image(stack, tpl)
    return deploy(cloud, tpl, "app-1")


def test_data_disk_create_attach_resize_detach_delete(stack: LocalStack, cloud: cs.CloudStack, sp: Any,
                                                      vm: dict[str, Any]) -> None:
    small = offering(cloud, "sp-small")
    vol = cloud.createVolume(name="data-1", zoneid=vm["zoneid"], diskofferingid=small)["volume"]
    # CloudStack allocates the record only: nothing on StorPool until the disk is attached.
    assert vol["state"] == "Allocated" and "path" not in vol
    vol = cloud.attachVolume(id=vol["id"], virtualmachineid=vm["id"])["volume"]
    assert vol["state"] == "Ready" and vol["virtualmachineid"] == vm["id"] and vol["deviceid"] == 1
    on_sp = sp_volume(sp, vol["path"])
    assert on_sp is not None and on_sp.size == 10 * GiB
    assert on_sp.tags["cvm"] == vm["id"] and on_sp.tags["disk"] == "1" and on_sp.tags["uuid"] == vol["id"]
    # Attached to the running VM's host.
    client = stack.agents[vm["hostid"]].client_id
    assert {int(a.client) for a in sp.attachmentsList() if a.volume == on_sp.name} == {client}

    vol = cloud.resizeVolume(id=vol["id"], size=12)["volume"]
    assert vol["size"] == 12 * GiB and sp_volume(sp, vol["path"]).size == 12 * GiB
    with pytest.raises(cs.CloudStackApiException) as refused:
        cloud.resizeVolume(id=vol["id"], size=11)
    assert refused.value.error["errorcode"] == 431 and "shrinkok" in refused.value.error["errortext"]
    assert sp_volume(sp, vol["path"]).size == 12 * GiB

    vol = cloud.detachVolume(id=vol["id"])["volume"]
    assert "virtualmachineid" not in vol
    tags = sp_volume(sp, vol["path"]).tags
    assert not tags.get("cvm") and not tags.get("disk")

    path = vol["path"]
    assert cloud.deleteVolume(id=vol["id"])["success"] is True
    assert sp_volume(sp, path) is None
    assert cloud.listVolumes(id=None, name="data-1") == {}


def test_deleting_an_attached_volume_is_refused(cloud: cs.CloudStack, sp: Any, vm: dict[str, Any]) -> None:
    small = offering(cloud, "sp-small")
    vol = cloud.createVolume(name="data-2", zoneid=vm["zoneid"], diskofferingid=small, virtualmachineid=vm["id"])
    vol = vol["volume"]
    with pytest.raises(cs.CloudStackApiException) as refused:
        cloud.deleteVolume(id=vol["id"])
    assert refused.value.error["errorcode"] == 431
    assert sp_volume(sp, vol["path"]) is not None


def _job_refusal(call: Any, **params: Any) -> dict[str, Any]:
    with pytest.raises(cs.CloudStackApiException) as refused:
        call(**params)
    return job_error(refused.value)


def test_destroy_volume_with_and_without_expunge(cloud: cs.CloudStack, sp: Any, vm: dict[str, Any]) -> None:
    """destroyVolume (async, VolumeApiServiceImpl.destroyVolume; Marvin's cleanup destroys
    volumes with expunge=true): attached is refused in the job; with `expunge` the volume goes
    from StorPool and from the listings; without, it is Destroy and keeps its storage; an
    Allocated volume can only be expunged."""
    small = offering(cloud, "sp-small")
    attached = cloud.createVolume(name="d-att", zoneid=vm["zoneid"], diskofferingid=small,
                                  virtualmachineid=vm["id"])["volume"]
    assert "not attached to any VM" in _job_refusal(cloud.destroyVolume, id=attached["id"], expunge="true")["errortext"]
    cloud.detachVolume(id=attached["id"])
    gone = cloud.destroyVolume(id=attached["id"], expunge="true")["volume"]
    assert (gone["id"], gone["state"]) == (attached["id"], "Expunged")
    assert sp_volume(sp, attached["path"]) is None and cloud.listVolumes(name="d-att") == {}

    kept = cloud.createVolume(name="d-keep", zoneid=vm["zoneid"], diskofferingid=small,
                              virtualmachineid=vm["id"])["volume"]
    cloud.detachVolume(id=kept["id"])
    assert cloud.destroyVolume(id=kept["id"])["volume"]["state"] == "Destroy"
    assert sp_volume(sp, kept["path"]) is not None  # the expunge thread's work, later
    assert one(cloud, "listVolumes", "volume", id=kept["id"])["state"] == "Destroy"

    fresh = cloud.createVolume(name="d-new", zoneid=vm["zoneid"], diskofferingid=small)["volume"]
    assert "can only be expunged" in _job_refusal(cloud.destroyVolume, id=fresh["id"])["errortext"]
    assert cloud.destroyVolume(id=fresh["id"], expunge="true")["volume"]["state"] == "Expunged"


def test_change_of_disk_offering_applies_qc_template_and_iops(cloud: cs.CloudStack, sp: Any,
                                                             vm: dict[str, Any]) -> None:
    vol = cloud.createVolume(name="data-3", zoneid=vm["zoneid"], diskofferingid=offering(cloud, "sp-small"),
                             virtualmachineid=vm["id"])["volume"]
    before = sp_volume(sp, vol["path"])
    assert before.templateName == "ssd" and not before.tags.get("qc")

    vol = cloud.changeOfferingForVolume(id=vol["id"], diskofferingid=offering(cloud, "sp-gold"))["volume"]
    after = sp_volume(sp, vol["path"])
    assert after.tags.get("qc") == "gold" and after.size == 20 * GiB  # the offering's size: a resize

    vol = cloud.changeOfferingForVolume(id=vol["id"], diskofferingid=offering(cloud, "sp-nvme-template"))["volume"]
    after = sp_volume(sp, vol["path"])
    assert after.templateName == "nvme" and not after.tags.get("qc")

    vol = cloud.changeOfferingForVolume(id=vol["id"], diskofferingid=offering(cloud, "sp-iops-500"))["volume"]
    after = sp_volume(sp, vol["path"])
    assert after.iops == 500 and vol["maxiops"] == 500


def test_volume_migration_between_storpool_pools(stack: LocalStack, cloud: cs.CloudStack, sp: Any,
                                                 vm: dict[str, Any]) -> None:
    vol = cloud.createVolume(name="data-4", zoneid=vm["zoneid"], diskofferingid=offering(cloud, "sp-small"),
                             virtualmachineid=vm["id"])["volume"]
    cloud.detachVolume(id=vol["id"])
    stack.sp.write_object(sp_volume(sp, vol["path"]).globalId, 4096, b"moved data")
    target = one(cloud, "listStoragePools", "storagepool", name="storpool-hybrid")
    moved = cloud.migrateVolume(volumeid=vol["id"], storageid=target["id"])["volume"]
    assert moved["storageid"] == target["id"]
    on_sp = sp_volume(sp, moved["path"])
    assert on_sp is not None and on_sp.templateName == "hybrid"
    assert on_sp.tags["pool"] == target["id"]
    assert stack.sp.read_object(on_sp.globalId, 4096, 10) == b"moved data"
    if moved["path"] != vol["path"]:
        assert sp_volume(sp, vol["path"]) is None


def test_a_plugin_failure_fails_the_job_with_its_text(cloud: cs.CloudStack, sp: Any, vm: dict[str, Any]) -> None:
    vol = cloud.createVolume(name="data-5", zoneid=vm["zoneid"], diskofferingid=offering(cloud, "sp-small"),
                             virtualmachineid=vm["id"])["volume"]
    vol = cloud.detachVolume(id=vol["id"])["volume"]
    # Removed on StorPool behind CloudStack's back: the plugin cannot resize it.
    name = sp_volume(sp, vol["path"]).name
    sp.volumesReassign(json=[{"volume": name, "detach": "all", "force": True}])
    sp.volumeDelete(name)
    with pytest.raises(cs.CloudStackApiException) as failed:
        cloud.resizeVolume(id=vol["id"], size=15)
    err = job_error(failed.value)
    assert err["errorcode"] == 530 and "resize_volume failed" in err["errortext"]
    assert "not on StorPool" in err["errortext"]
    # CloudStack's record is unchanged.
    assert one(cloud, "listVolumes", "volume", id=vol["id"])["size"] == 10 * GiB


def test_live_volume_migration_of_a_running_vms_disk(stack: LocalStack, cloud: cs.CloudStack, sp: Any,
                                                     vm: dict[str, Any]) -> None:
    vol = cloud.createVolume(name="data-6", zoneid=vm["zoneid"], diskofferingid=offering(cloud, "sp-small"),
                             virtualmachineid=vm["id"])["volume"]
    target = one(cloud, "listStoragePools", "storagepool", name="storpool-hybrid")
    with pytest.raises(cs.CloudStackApiException) as refused:
        cloud.migrateVolume(volumeid=vol["id"], storageid=target["id"])  # attached to a running VM
    assert refused.value.error["errorcode"] == 431
    moved = cloud.migrateVolume(volumeid=vol["id"], storageid=target["id"], livemigrate=True)["volume"]
    # In place: the same StorPool volume, still attached to the VM's host, now on the target's template.
    assert moved["path"] == vol["path"] and moved["storageid"] == target["id"]
    on_sp = sp_volume(sp, moved["path"])
    assert on_sp.templateName == "hybrid" and on_sp.tags["cvm"] == vm["id"]
    client = stack.agents[vm["hostid"]].client_id
    assert {int(a.client) for a in sp.attachmentsList() if a.volume == on_sp.name} == {client}


def test_resize_of_a_stopped_vms_disk_reaches_its_last_host(stack: LocalStack, cloud: cs.CloudStack, sp: Any,
                                                            vm: dict[str, Any]) -> None:
    """CloudStack hands the driver the VM's host, else its last host (ResizeVolumePayload.hosts);
    the API shows a stopped VM no host at all, so only the caller can say where it last ran."""
    vol = cloud.createVolume(name="data-6", zoneid=vm["zoneid"], diskofferingid=offering(cloud, "sp-small"),
                             virtualmachineid=vm["id"])["volume"]
    last = vm["hostid"]
    cloud.stopVirtualMachine(id=vm["id"])
    stopped = one(cloud, "listVirtualMachines", "virtualmachine", id=vm["id"])
    assert "hostid" not in stopped and "lasthostid" not in stopped
    before = {h: len(a.server.jobs.list()) for h, a in stack.agents.items()}
    vol = cloud.resizeVolume(id=vol["id"], size=11)["volume"]
    on_sp = sp_volume(sp, vol["path"])
    assert vol["size"] == 11 * GiB and on_sp.size == 11 * GiB
    told = [j for j in stack.agents[last].server.jobs.list()[before[last]:] if j.command == "resize"]
    assert len(told) == 1 and told[0].state == "succeeded"
    assert told[0].result["volume"] == "~" + on_sp.globalId and told[0].result["notified"] is False
    assert all(len(a.server.jobs.list()) == before[h] for h, a in stack.agents.items() if h != last)
