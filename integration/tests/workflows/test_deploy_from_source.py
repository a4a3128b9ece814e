"""deployVirtualMachine from an existing volume or a volume snapshot, without a template
(CloudStack 4.21, KVM), through `cs`; the root disk checked on StorPool."""

from __future__ import annotations

from typing import Any

import cs
import pytest

from integration.stack import LocalStack
from integration.tests.workflows.support import (
    MiB,
    deploy,
    job_error,
    offering,
    one,
    sp_snapshot,
    sp_volume,
    template,
    volumes_of,
    with_image,
)

pytestmark = pytest.mark.root

ONLY_ONE = "Please provide only one of the following parameters - template ID, volume ID or snapshot ID"


@pytest.fixture
def source(stack: LocalStack, cloud: cs.CloudStack, sp: Any) -> dict[str, Any]:
    """A snapshot of a running VM's root disk (offering `sp-gold`: SP_QOSCLASS gold), taken after
    a marker was written to it; the marker is overwritten afterwards."""
    tpl = template(cloud)
    with_image(stack, tpl)
    vm = deploy(cloud, tpl, "origin", overridediskofferingid=offering(cloud, "sp-gold"))
    root = volumes_of(cloud, vm["id"])[0]
    gid = sp_volume(sp, root["path"]).globalId
    stack.sp.write_object(gid, 5 * MiB, b"before the snapshot")
    snap = cloud.createSnapshot(volumeid=root["id"])["snapshot"]
    stack.sp.write_object(gid, 5 * MiB, b"after the snapshot!")
    return {"template": tpl, "vm": vm, "root": root, "snapshot": snap}


def _deploy_from(cloud: cs.CloudStack, zone: str, name: str, **source: str) -> dict[str, Any]:
    svc = offering(cloud, "small", disk=False)
    return dict(cloud.deployVirtualMachine(zoneid=zone, serviceofferingid=svc, name=name, **source)["virtualmachine"])


def test_a_vm_from_a_snapshot_gets_a_new_root_cloned_from_it(stack: LocalStack, cloud: cs.CloudStack, sp: Any,
                                                             source: dict[str, Any]) -> None:
    """With `overridediskofferingid`, the new root's offering (and so its `qc` tag) is that one."""
    snap, tpl = source["snapshot"], source["template"]
    vm = _deploy_from(cloud, tpl["zoneid"], "from-snapshot", snapshotid=snap["id"],
                      overridediskofferingid=offering(cloud, "sp-gold"))
    assert vm["state"] == "Running" and vm["templateid"] == tpl["id"]
    [root] = volumes_of(cloud, vm["id"])
    assert root["type"] == "ROOT" and root["state"] == "Ready" and root["id"] != source["root"]["id"]
    assert root["diskofferingid"] == offering(cloud, "sp-gold")
    on_sp = sp_volume(sp, root["path"])
    # The driver's create-from-snapshot: a child of the StorPool snapshot, nothing copied.
    assert on_sp.parentName == sp_snapshot(sp, snap_path(sp, snap["id"])).name
    assert stack.sp.read_object(on_sp.globalId, 5 * MiB, 19) == b"before the snapshot"
    assert on_sp.tags["qc"] == "gold" and on_sp.tags["cvm"] == vm["id"] and on_sp.tags["disk"] == "0"
    client = stack.agents[vm["hostid"]].client_id
    assert {int(a.client) for a in sp.attachmentsList() if a.volume == on_sp.name} == {client}
    # The source VM's root is untouched.
    assert stack.sp.read_object(sp_volume(sp, source["root"]["path"]).globalId, 5 * MiB, 19) == b"after the snapshot!"


def test_a_root_from_a_snapshot_takes_the_root_disk_offering_not_the_snapshot_s(
        stack: LocalStack, cloud: cs.CloudStack, sp: Any, source: dict[str, Any]) -> None:
    """CloudStack picks the root disk offering (the service offering's, unless overridden) before
    it looks at the source, and gives it to the new volume: the snapshot's volume's offering
    (`sp-gold`, SP_QOSCLASS gold) does not follow, so neither does its `qc` tag."""
    snap, tpl = source["snapshot"], source["template"]
    vm = _deploy_from(cloud, tpl["zoneid"], "from-snapshot-plain", snapshotid=snap["id"])
    [root] = volumes_of(cloud, vm["id"])
    assert root.get("diskofferingid") != offering(cloud, "sp-gold")
    on_sp = sp_volume(sp, root["path"])
    assert on_sp.parentName == sp_snapshot(sp, snap_path(sp, snap["id"])).name
    assert "qc" not in on_sp.tags and on_sp.tags["cvm"] == vm["id"]
    cloud.destroyVirtualMachine(id=vm["id"], expunge=True)


def snap_path(sp: Any, snapshot_id: str) -> str:
    """The StorPool snapshot CloudStack's snapshot names (tag `uuid`), as a by-id path."""
    found = next(s for s in sp.snapshotsList() if s.tags.get("uuid") == snapshot_id and not s.deleted)
    return "/dev/storpool-byid/" + found.globalId


def test_a_vm_from_a_volume_takes_that_volume_as_its_root(stack: LocalStack, cloud: cs.CloudStack, sp: Any,
                                                          source: dict[str, Any]) -> None:
    snap, tpl = source["snapshot"], source["template"]
    vol = cloud.createVolume(name="restored-root", snapshotid=snap["id"], zoneid=tpl["zoneid"],
                             diskofferingid=offering(cloud, "sp-gold"))["volume"]
    assert vol["type"] == "DATADISK" and not vol.get("virtualmachineid")
    before = {v.name for v in sp.volumesList()}
    vm = _deploy_from(cloud, tpl["zoneid"], "from-volume", volumeid=vol["id"])
    assert vm["state"] == "Running" and vm["templateid"] == tpl["id"]  # the template of the snapshot's volume
    [root] = volumes_of(cloud, vm["id"])
    # The same volume, now the VM's ROOT disk: nothing new on StorPool.
    assert root["id"] == vol["id"] and root["path"] == vol["path"]
    assert root["type"] == "ROOT" and root["deviceid"] == 0 and root["diskofferingid"] == vol["diskofferingid"]
    assert {v.name for v in sp.volumesList()} == before
    on_sp = sp_volume(sp, root["path"])
    assert on_sp.tags["qc"] == "gold" and on_sp.tags["cvm"] == vm["id"] and on_sp.tags["disk"] == "0"
    assert stack.sp.read_object(on_sp.globalId, 5 * MiB, 19) == b"before the snapshot"
    client = stack.agents[vm["hostid"]].client_id
    assert {int(a.client) for a in sp.attachmentsList() if a.volume == on_sp.name} == {client}
    # A ROOT disk goes with its VM.
    cloud.destroyVirtualMachine(id=vm["id"], expunge=True)
    assert sp_volume(sp, root["path"]) is None and cloud.listVolumes(name="restored-root") == {}


def test_a_deploy_with_no_source_or_two_is_refused(cloud: cs.CloudStack, source: dict[str, Any]) -> None:
    tpl, snap = source["template"], source["snapshot"]
    for extra in ({}, {"templateid": tpl["id"], "snapshotid": snap["id"]}):
        with pytest.raises(cs.CloudStackApiException) as refused:
            _deploy_from(cloud, tpl["zoneid"], "refused", **extra)
        err = job_error(refused.value)
        assert err["errorcode"] == 530 and err["errortext"] == ONLY_ONE, err
    assert cloud.listVirtualMachines(name="refused") == {}


def test_volumes_that_cannot_become_a_root_are_refused(cloud: cs.CloudStack, source: dict[str, Any]) -> None:
    zone, vm = source["template"]["zoneid"], source["vm"]
    cases = {
        # attached to a VM
        source["root"]["id"]: f"The volume {source['root']['name']} is already attached to a VM",
        # not created on primary storage yet (no pool holds it)
        cloud.createVolume(name="blank", zoneid=zone, diskofferingid=offering(cloud, "sp-small"))["volume"]["id"]:
            "Deployment of virtual machine is supported only for Zone-wide storage pools",
    }
    data = cloud.createVolume(name="data", zoneid=zone, diskofferingid=offering(cloud, "sp-small"),
                              virtualmachineid=vm["id"])["volume"]
    cloud.detachVolume(id=data["id"])
    cases[data["id"]] = "The provided volume/snapshot doesn't have a template to deploy a VM"  # a blank data disk
    for volume_id, text in cases.items():
        with pytest.raises(cs.CloudStackApiException) as refused:
            _deploy_from(cloud, zone, "refused", volumeid=volume_id)
        err = job_error(refused.value)
        assert err["errorcode"] == 431 and err["errortext"].startswith(text), err
    assert cloud.listVirtualMachines(name="refused") == {}
    assert one(cloud, "listVolumes", "volume", id=source["root"]["id"])["virtualmachineid"] == vm["id"]
