"""Volume snapshots through CloudStack's API, with the secondary-storage bypass on and off, and
what is made from them: volumes, templates, reverts; checked on StorPool and the image store."""

from __future__ import annotations

import time
from typing import Any

import cs
import pytest

from integration.stack import BYPASS_SETTING, LocalStack
from integration.tests.workflows.support import (
    MiB,
    deploy,
    offering,
    one,
    sp_volume,
    template,
    volumes_of,
    with_image,
)

pytestmark = pytest.mark.root


def set_bypass(stack: LocalStack, cloud: cs.CloudStack, on: bool) -> None:
    cloud.updateConfiguration(name=BYPASS_SETTING, value="true" if on else "false")
    time.sleep(stack.settings_ttl + 0.1)  # past the plugin's settings cache


@pytest.fixture
def data_disk(stack: LocalStack, cloud: cs.CloudStack, sp: Any) -> dict[str, Any]:
    tpl = template(cloud)
    with_image(stack, tpl)
    vm = deploy(cloud, tpl, "db-1")
    vol = cloud.createVolume(name="db-data", zoneid=vm["zoneid"], diskofferingid=offering(cloud, "sp-small"),
                             virtualmachineid=vm["id"])["volume"]
    stack.sp.write_object(sp_volume(sp, vol["path"]).globalId, 5 * MiB, b"first version")
    return dict(vol)


def test_snapshot_with_and_without_bypass(stack: LocalStack, cloud: cs.CloudStack, sp: Any) -> None:
    tpl = template(cloud)
    with_image(stack, tpl)
    vm = deploy(cloud, tpl, "db-1")
    root = volumes_of(cloud, vm["id"])[0]  # the template's 64 MiB: a quick backup
    set_bypass(stack, cloud, False)
    snap = cloud.createSnapshot(volumeid=root["id"], name="nightly")["snapshot"]
    assert snap["state"] == "BackedUp" and snap["volumeid"] == root["id"]
    backups = [p for p in stack.secondary_files() if p.startswith("snapshots/") and snap["id"] in p]
    assert len(backups) == 1 and snap["physicalsize"] > 0
    on_sp = next(s for s in sp.snapshotsList() if s.tags.get("uuid") == snap["id"])
    assert on_sp.tags.get("cs") == "snapshot"

    set_bypass(stack, cloud, True)
    before = stack.secondary_files()
    snap2 = cloud.createSnapshot(volumeid=root["id"], name="hourly")["snapshot"]
    assert stack.secondary_files() == before  # kept on StorPool only
    assert any(s.tags.get("uuid") == snap2["id"] for s in sp.snapshotsList())

    for s in (snap, snap2):
        cloud.deleteSnapshot(id=s["id"])
    left = [s for s in sp.snapshotsList() if s.tags.get("uuid") in (snap["id"], snap2["id"])]
    assert all(s.deleted for s in left), left  # StorPool keeps a deleted parent while a child needs it
    assert not [p for p in stack.secondary_files() if snap["id"] in p]
    assert cloud.listSnapshots(volumeid=root["id"]) == {}


def test_volume_and_template_from_a_snapshot(stack: LocalStack, cloud: cs.CloudStack, sp: Any) -> None:
    tpl = template(cloud)
    with_image(stack, tpl)
    vm = deploy(cloud, tpl, "db-2")
    root = volumes_of(cloud, vm["id"])[0]  # 64 MiB: the template's copy to the image store is quick
    stack.sp.write_object(sp_volume(sp, root["path"]).globalId, 5 * MiB, b"first version")
    set_bypass(stack, cloud, True)
    snap = cloud.createSnapshot(volumeid=root["id"])["snapshot"]
    stack.sp.write_object(sp_volume(sp, root["path"]).globalId, 5 * MiB, b"second version")

    vol = cloud.createVolume(name="restored", snapshotid=snap["id"])["volume"]
    assert vol["state"] == "Ready" and vol["path"] != root["path"] and vol["type"] == "DATADISK"
    restored = sp_volume(sp, vol["path"])
    assert restored is not None and restored.parentName  # a child of the snapshot: nothing copied
    assert stack.sp.read_object(restored.globalId, 5 * MiB, 13) == b"first version"

    new = cloud.createTemplate(name="from-snap", displaytext="from-snap", ostypeid="1", snapshotid=snap["id"])
    new = new["template"]
    assert new["isready"] is True
    assert any(new["id"] in p for p in stack.secondary_files())  # CloudStack's copy on the image store
    # A VM from the new template boots the snapshot's data, straight from the pool's cache.
    copies = len(stack.agent_jobs("copy_template"))
    svc = offering(cloud, "small", disk=False)
    vm = cloud.deployVirtualMachine(zoneid=new["zoneid"], templateid=new["id"], serviceofferingid=svc,
                                    name="from-tpl")["virtualmachine"]
    new_root = sp_volume(sp, volumes_of(cloud, vm["id"])[0]["path"])
    assert stack.sp.read_object(new_root.globalId, 5 * MiB, 13) == b"first version"
    assert len(stack.agent_jobs("copy_template")) == copies


def test_template_from_a_volume_of_a_stopped_vm(stack: LocalStack, cloud: cs.CloudStack, sp: Any) -> None:
    tpl = template(cloud)
    with_image(stack, tpl, b"golden image")
    vm = deploy(cloud, tpl, "golden")
    root = volumes_of(cloud, vm["id"])[0]
    with pytest.raises(cs.CloudStackApiException) as refused:
        cloud.createTemplate(name="golden-tpl", displaytext="g", ostypeid="1", volumeid=root["id"])
    assert refused.value.error["errorcode"] == 431
    cloud.stopVirtualMachine(id=vm["id"])
    new = cloud.createTemplate(name="golden-tpl", displaytext="g", ostypeid="1", volumeid=root["id"])["template"]
    assert one(cloud, "listTemplates", "template", templatefilter="self", id=new["id"])["isready"] is True
    caches = [s for s in sp.snapshotsList() if s.tags.get("uuid") == new["id"]]
    assert len(caches) == 1


def test_revert_a_volume_to_its_snapshot(stack: LocalStack, cloud: cs.CloudStack, sp: Any,
                                         data_disk: dict[str, Any]) -> None:
    set_bypass(stack, cloud, True)
    snap = cloud.createSnapshot(volumeid=data_disk["id"])["snapshot"]
    gid = sp_volume(sp, data_disk["path"]).globalId
    stack.sp.write_object(gid, 5 * MiB, b"later version")
    with pytest.raises(cs.CloudStackApiException) as refused:
        cloud.revertSnapshot(id=snap["id"])  # the VM is running
    assert refused.value.error["errorcode"] == 431
    cloud.stopVirtualMachine(id=data_disk["virtualmachineid"])
    cloud.revertSnapshot(id=snap["id"])
    after = sp_volume(sp, data_disk["path"])
    assert stack.sp.read_object(after.globalId, 5 * MiB, 13) == b"first version"
    assert after.tags["cvm"] == data_disk["virtualmachineid"]  # the VM's tags survive the revert


def test_volume_from_a_snapshot_gone_from_storpool_comes_from_its_backup(stack: LocalStack, cloud: cs.CloudStack,
                                                                        sp: Any) -> None:
    tpl = template(cloud)
    with_image(stack, tpl)
    vm = deploy(cloud, tpl, "db-3")
    root = volumes_of(cloud, vm["id"])[0]
    stack.sp.write_object(sp_volume(sp, root["path"]).globalId, 7 * MiB, b"backed up")
    set_bypass(stack, cloud, False)
    snap = cloud.createSnapshot(volumeid=root["id"])["snapshot"]
    # Removed on StorPool behind CloudStack's back: only the image-store copy is left.
    sp.snapshotDelete(next(s.name for s in sp.snapshotsList() if s.tags.get("uuid") == snap["id"]))
    copies = len(stack.agent_jobs("copy_to_volume"))
    vol = cloud.createVolume(name="from-backup", snapshotid=snap["id"])["volume"]
    assert len(stack.agent_jobs("copy_to_volume")) == copies + 1
    assert stack.sp.read_object(sp_volume(sp, vol["path"]).globalId, 7 * MiB, 9) == b"backed up"
