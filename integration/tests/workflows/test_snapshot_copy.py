"""copySnapshot to another zone's StorPool (another StorPool location), through the real `cs`
client against the simulator, checked on both StorPool clusters through the official bindings:
the copy has the snapshot's global id and data, the Java plugin's tags, a volume of the second
zone is made from it, and the export is released once the copy is complete."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cs
import pytest

from integration.needs import need_tool
from integration.stack import ZONE2_LOCATION, ZONE2_POOL, LocalStack
from integration.tests.workflows.support import MiB, deploy, offering, sp_volume, template, with_image

pytestmark = pytest.mark.root

RECOVERY_SETTING = "storpool.snapshot.recovery.from.remote.check"


@pytest.fixture
def stack(xfs_dir: Path) -> Iterator[LocalStack]:
    """The local stack with its second zone (its own StorPool cluster in another location)."""
    need_tool("qemu-img")
    root = xfs_dir / f"stack-{uuid.uuid4().hex[:10]}"
    try:
        with LocalStack(root, make_xfs=False, second_zone=True) as s:
            # The operator's interval of the export check, set before the service starts (its
            # periodic task reads it again after each wait).
            s.cs.model.set_configuration(RECOVERY_SETTING, "1")
            yield s
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def snapshot(stack: LocalStack, cloud: cs.CloudStack, sp: Any) -> dict[str, Any]:
    """A data disk in the first zone with known bytes, and a StorPool-only snapshot of it."""
    cloud.updateConfiguration(name="sp.bypass.secondary.storage", value="true")
    time.sleep(stack.settings_ttl + 0.1)  # past the plugin's settings cache
    tpl = template(cloud)
    with_image(stack, tpl)
    vm = deploy(cloud, tpl, "copy-1")
    vol = cloud.createVolume(name="copy-data", zoneid=vm["zoneid"], diskofferingid=offering(cloud, "sp-small"),
                             virtualmachineid=vm["id"])["volume"]
    stack.sp.write_object(sp_volume(sp, vol["path"]).globalId, 5 * MiB, b"copied across locations")
    snap = cloud.createSnapshot(volumeid=vol["id"], name="to-copy")["snapshot"]
    stack.sp.write_object(sp_volume(sp, vol["path"]).globalId, 5 * MiB, b"written after the snapshot")
    return dict(snap)


def _zone2(cloud: cs.CloudStack) -> str:
    return str(next(z["id"] for z in cloud.listZones()["zone"] if z["name"] == "zone2"))


def _on(api: Any, tags: dict[str, str]) -> list[Any]:
    """Live snapshots with these tags (a deleted one that still has children stays, marked deleted)."""
    return [s for s in api.snapshotsList() if not s.deleted and all(s.tags.get(k) == v for k, v in tags.items())]


def test_copy_to_the_second_zone_then_a_volume_there(stack: LocalStack, cloud: cs.CloudStack, sp: Any,
                                                      snapshot: dict[str, Any]) -> None:
    assert stack.sp2 is not None
    far = stack.sp2.api()
    source = _on(sp, {"uuid": snapshot["id"], "cs": "snapshot"})
    assert len(source) == 1
    gid = str(source[0].globalId)

    copied = cloud.copySnapshot(id=snapshot["id"], destzoneids=_zone2(cloud), usestoragereplication="true")
    assert copied["snapshot"]["id"] == snapshot["id"]

    # On the second location: the same global id, the Java plugin's tags, the destination pool's
    # template, and the snapshot's bytes (not what was written after it).
    copy = far.snapshotList(f"~{gid}")[0]
    assert copy.tags == {"cs": "snapshot", "uuid": snapshot["id"]}
    assert copy.templateName == "ssd" and not copy.recoveringFromRemote
    assert stack.sp2.read_object(gid, 5 * MiB, 23) == b"copied across locations"
    assert [(e.globalId, e.location) for e in sp.exportsList()["exports"]] == [(gid, ZONE2_LOCATION)]

    # A volume of the second zone from the snapshot: made on the second cluster, from the copy.
    vol = cloud.createVolume(name="restored", snapshotid=snapshot["id"], zoneid=_zone2(cloud))["volume"]
    assert vol["zoneid"] == _zone2(cloud)
    made = sp_volume(far, vol["path"])
    assert made.parentName == f"~{gid}"
    assert stack.sp2.read_object(str(made.globalId), 5 * MiB, 23) == b"copied across locations"
    zone2_pool = next(p for p in cloud.listStoragePools()["storagepool"] if p["name"] == ZONE2_POOL)
    assert vol["storageid"] == zone2_pool["id"]


def test_export_released_then_snapshot_deleted_in_both_locations(stack: LocalStack, cloud: cs.CloudStack, sp: Any,
                                                                 snapshot: dict[str, Any]) -> None:
    assert stack.sp2 is not None
    far = stack.sp2.api()
    cloud.copySnapshot(id=snapshot["id"], destzoneid=_zone2(cloud), usestoragereplication="true")
    gid = str(_on(far, {"uuid": snapshot["id"]})[0].globalId)
    # StorPool refuses to delete a snapshot still exported: the plugin's check releases it.
    deadline = time.monotonic() + 60
    while sp.exportsList()["exports"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sp.exportsList()["exports"] == []
    cloud.deleteSnapshot(id=snapshot["id"])
    assert _on(sp, {"uuid": snapshot["id"]}) == [] and _on(far, {"uuid": snapshot["id"]}) == []
    assert not any(str(s.globalId) == gid for s in far.snapshotsList())
    assert snapshot["id"] not in {s["id"] for s in cloud.listSnapshots().get("snapshot", [])}


def test_refusals(stack: LocalStack, cloud: cs.CloudStack, sp: Any, snapshot: dict[str, Any]) -> None:
    """CloudStack's own checks (failed jobs, 431) and the plugin's: nothing is exported."""
    zone1 = snapshot["zoneid"]
    with pytest.raises(cs.CloudStackApiException) as same:
        cloud.copySnapshot(id=snapshot["id"], destzoneid=zone1, usestoragereplication="true")
    assert "different source and destination zones" in str(same.value)
    with pytest.raises(cs.CloudStackApiException) as both:
        cloud.copySnapshot(id=snapshot["id"], destzoneid=_zone2(cloud), destzoneids=_zone2(cloud),
                           usestoragereplication="true")
    assert "cannot be specified at the same time" in str(both.value)
    # A destination pool whose StorPool location is unknown: the plugin refuses, naming it.
    zone2_pool = next(p for p in cloud.listStoragePools()["storagepool"] if p["name"] == ZONE2_POOL)
    stack.cs.model.set_configuration("sp.cluster.location", "", "storagepool", zone2_pool["id"])
    time.sleep(stack.settings_ttl + 0.1)
    cloud.copySnapshot(id=snapshot["id"], destzoneid=_zone2(cloud), usestoragereplication="true")
    assert sp.exportsList()["exports"] == []
    plugin_calls = [c for c in stack.cs.model.plugin.calls if c.operation == "copy_snapshot"]  # type: ignore[union-attr]
    assert plugin_calls and not plugin_calls[-1].ok


def test_delete_in_one_zone_keeps_the_other(stack: LocalStack, cloud: cs.CloudStack, sp: Any,
                                             snapshot: dict[str, Any]) -> None:
    """deleteSnapshot with `zoneid` (DeleteSnapshotCmd): only that zone's copy goes."""
    assert stack.sp2 is not None
    far = stack.sp2.api()
    cloud.copySnapshot(id=snapshot["id"], destzoneid=_zone2(cloud), usestoragereplication="true")
    assert len(_on(far, {"uuid": snapshot["id"]})) == 1
    cloud.deleteSnapshot(id=snapshot["id"], zoneid=_zone2(cloud))
    assert _on(far, {"uuid": snapshot["id"]}) == []
    assert len(_on(sp, {"uuid": snapshot["id"], "cs": "snapshot"})) == 1
    assert snapshot["id"] in {s["id"] for s in cloud.listSnapshots()["snapshot"]}


def test_snapshot_taken_in_both_zones_and_listed_per_zone(stack: LocalStack, cloud: cs.CloudStack, sp: Any,
                                                          snapshot: dict[str, Any]) -> None:
    """createSnapshot with `zoneids` and `usestoragereplication` (what CloudStack's StorPool
    tests do): taken, then copied to the other zone's StorPool; listSnapshots with
    `showunique=false` lists it in both zones, with `zoneid` it is found in either."""
    assert stack.sp2 is not None
    far = stack.sp2.api()
    vol = cloud.listVolumes(id=snapshot["volumeid"])["volume"][0]
    snap = cloud.createSnapshot(volumeid=vol["id"], zoneids=_zone2(cloud), usestoragereplication="true")["snapshot"]
    copy = _on(far, {"uuid": snap["id"]})
    assert len(copy) == 1 and copy[0].tags == {"cs": "snapshot", "uuid": snap["id"]}
    assert str(copy[0].globalId) == str(_on(sp, {"uuid": snap["id"], "cs": "snapshot"})[0].globalId)
    entries = cloud.listSnapshots(id=snap["id"], showunique="false")["snapshot"]
    assert {e["zoneid"] for e in entries} == {vol["zoneid"], _zone2(cloud)}
    assert all(e["datastoretype"] == "Primary" and e["datastorestate"] == "Ready" for e in entries)
    assert [s["id"] for s in cloud.listSnapshots(id=snap["id"], zoneid=_zone2(cloud))["snapshot"]] == [snap["id"]]
    assert len(cloud.listSnapshots(id=snap["id"])["snapshot"]) == 1


def test_template_from_the_copy_in_the_second_zone(stack: LocalStack, cloud: cs.CloudStack, sp: Any,
                                                   snapshot: dict[str, Any]) -> None:
    """createTemplate with `snapshotid` and the second zone's `zoneid`: made from that zone's
    copy, on the second StorPool cluster, with the snapshot's data."""
    assert stack.sp2 is not None
    far = stack.sp2.api()
    os_type = cloud.listOsTypes()["ostype"][0]["id"]
    with pytest.raises(cs.CloudStackApiException) as missing:
        cloud.createTemplate(name="from-far", displaytext="from-far", ostypeid=os_type, snapshotid=snapshot["id"],
                             zoneid=_zone2(cloud))
    assert "Unable to find snapshot" in str(missing.value)
    cloud.copySnapshot(id=snapshot["id"], destzoneid=_zone2(cloud), usestoragereplication="true")
    tpl = cloud.createTemplate(name="from-far", displaytext="from-far", ostypeid=os_type, snapshotid=snapshot["id"],
                               zoneid=_zone2(cloud))["template"]
    assert tpl["zoneid"] == _zone2(cloud)
    gid = str(_on(far, {"uuid": snapshot["id"]})[0].globalId)
    cached = [s for s in far.snapshotsList() if s.tags.get("uuid") == tpl["id"] and not s.deleted]
    assert len(cached) == 1 and cached[0].parentName in (f"~{gid}", "")
    assert stack.sp2.read_object(str(cached[0].globalId), 5 * MiB, 23) == b"copied across locations"
    with pytest.raises(cs.CloudStackApiException) as no_snapshot:
        vol = cloud.listVolumes(id=snapshot["volumeid"])["volume"][0]
        cloud.createTemplate(name="bad", displaytext="bad", ostypeid=os_type, volumeid=vol["id"], zoneid=_zone2(cloud))
    assert "zone ID can only be specified together with snapshot ID" in str(no_snapshot.value)


def test_delete_in_the_first_zone_keeps_the_copy_usable(stack: LocalStack, cloud: cs.CloudStack, sp: Any,
                                                         snapshot: dict[str, Any]) -> None:
    """deleteSnapshot with the first zone's `zoneid` (CloudStack's StorPool test_03): the source
    goes from StorPool (its export revoked first, the copy being complete), the snapshot is then
    listed in the second zone only, and a volume is still made there from the copy."""
    assert stack.sp2 is not None
    far = stack.sp2.api()
    cloud.copySnapshot(id=snapshot["id"], destzoneid=_zone2(cloud), usestoragereplication="true")
    cloud.deleteSnapshot(id=snapshot["id"], zoneid=snapshot["zoneid"])
    assert _on(sp, {"uuid": snapshot["id"], "cs": "snapshot"}) == []
    assert sp.exportsList()["exports"] == []
    entries = cloud.listSnapshots(id=snapshot["id"], showunique="false")["snapshot"]
    assert {e["zoneid"] for e in entries} == {_zone2(cloud)}
    vol = cloud.createVolume(name="after", snapshotid=snapshot["id"], zoneid=_zone2(cloud))["volume"]
    assert stack.sp2.read_object(str(sp_volume(far, vol["path"]).globalId), 5 * MiB, 23) == b"copied across locations"


def test_a_user_copies_its_snapshot_with_its_own_keys(stack: LocalStack, cloud: cs.CloudStack, sp: Any) -> None:
    """CloudStack's StorPool tests take, copy and use the snapshot as the account's user, with
    the user's own API keys (Marvin's getUserApiClient: registerUserKeys, then requests signed
    with them): the snapshot is the account's, listed to that user in both zones, its copy on the
    second StorPool cluster; the volume and the template made from it are the account's too."""
    assert stack.sp2 is not None
    far = stack.sp2.api()
    tpl = template(cloud)
    with_image(stack, tpl)
    domain = cloud.listDomains()["domain"][0]["id"]
    acc = cloud.createAccount(username="marvin-user", accounttype=0, domainid=domain, email="m@example.org",
                              firstname="m", lastname="u", password="password")["account"]
    vm = deploy(cloud, tpl, "user-vm-1", account="marvin-user", domainid=domain)
    root = cloud.listVolumes(virtualmachineid=vm["id"], type="ROOT", listall=True)["volume"][0]
    assert root["account"] == "marvin-user"
    stack.sp.write_object(sp_volume(sp, root["path"]).globalId, 5 * MiB, b"the user's own bytes")
    keys = cloud.registerUserKeys(id=acc["user"][0]["id"])["userkeys"]
    user = cs.CloudStack(stack.cs.endpoint, keys["apikey"], keys["secretkey"], fetch_result=True, poll_interval=0.05,
                         job_timeout=180)

    snap = user.createSnapshot(volumeid=root["id"], zoneids=_zone2(cloud), usestoragereplication="true")["snapshot"]
    assert snap["account"] == "marvin-user"
    # SnapshotResponse's virtualsize is the volume's size (test_05 sizes a disk offering by it).
    assert (snap["volumetype"], snap["virtualsize"]) == ("ROOT", root["size"])
    entries = user.listSnapshots(id=snap["id"], showunique="false")["snapshot"]
    assert {e["zoneid"] for e in entries} == {root["zoneid"], _zone2(cloud)}
    copy = _on(far, {"uuid": snap["id"]})
    assert len(copy) == 1 and stack.sp2.read_object(str(copy[0].globalId), 5 * MiB, 20) == b"the user's own bytes"

    vol = user.createVolume(name="from-user-snap", snapshotid=snap["id"], zoneid=root["zoneid"])["volume"]
    assert (vol["account"], vol["zoneid"]) == ("marvin-user", root["zoneid"])
    os_type = user.listOsTypes()["ostype"][0]["id"]
    made = user.createTemplate(name="user-tpl", displaytext="user-tpl", ostypeid=os_type, snapshotid=snap["id"],
                               zoneid=_zone2(cloud))["template"]
    assert (made["account"], made["zoneid"]) == ("marvin-user", _zone2(cloud))
    assert [t["id"] for t in user.listTemplates(templatefilter="self", name="user-tpl")["template"]] == [made["id"]]

    user.deleteSnapshot(id=snap["id"])
    assert user.listSnapshots(id=snap["id"]) == {}
    assert _on(far, {"uuid": snap["id"]}) == [] and _on(sp, {"uuid": snap["id"], "cs": "snapshot"}) == []
