"""Fidelity: every supported query driven through the official bindings, strictly typed.

`StrictApi` re-validates each raw answer with the bindings' declared return type and raises on
any mismatch (the plain bindings would hand back a partial object instead), so a missing or
mistyped field in any answer fails these tests.
"""

from __future__ import annotations

import pytest
from storpool import sptypes as sp
from storpool.spapi import ApiError

from integration.storpool_sim.testing import EmulatorHandle, StrictApi

GiB = 1 << 30


def _err(excinfo: pytest.ExceptionInfo[ApiError]) -> str:
    return str(excinfo.value.name)


def test_volume_create_and_read_back_every_view(api: StrictApi) -> None:
    res = api.volumeCreate({"name": "vol1", "size": GiB, "template": "ssd", "iops": 500,
                            "tags": {"uuid": "u-1", "cs": "volume"}})
    assert res.ok is True and res.name == "vol1"
    gid = res.globalId
    assert gid is not None and sp.GlobalVolumeId.handleVal(gid) == gid

    (summary,) = api.volumeList("vol1")
    assert isinstance(summary, sp.VolumeSummary)
    assert (summary.size, summary.templateName, summary.replication, summary.iops) == (GiB, "ssd", 3, 500)
    assert summary.tags == {"uuid": "u-1", "cs": "volume"}
    assert summary.parentName == ""
    assert [v.name for v in api.volumesList()] == ["vol1"]
    assert api.volumeList(f"~{gid}")[0].name == "vol1"

    desc = api.volumeDescribe(f"~{gid}")
    assert isinstance(desc, sp.Volume) and len(desc.objects) == GiB // (32 << 20)
    info = api.volumeInfo("vol1")
    assert isinstance(info, sp.VolumeInfo) and info.globalId == gid
    status = api.volumesStatus()["vol1"]
    assert isinstance(status, sp.VolumeStatus) and status.status == "up"
    (space,) = api.volumesSpace()
    assert isinstance(space, sp.VolumeSpace) and space.storedSize == 0


def test_anonymous_volume_is_addressed_by_global_id(api: StrictApi) -> None:
    res = api.volumeCreate({"size": GiB, "template": "hdd"})
    assert res.name == f"~{res.globalId}"
    assert api.volumeList(res.name)[0].globalId == res.globalId
    api.volumeDelete(res.name)
    assert api.volumesList() == []


def test_snapshot_becomes_parent_and_chain_is_listed(api: StrictApi) -> None:
    api.volumeCreate({"name": "v", "size": GiB, "template": "ssd", "tags": {"uuid": "vol"}})
    s1 = api.snapshotCreate("v", {"name": "s1", "tags": {"cs": "snapshot"}})
    s2 = api.snapshotCreate("v", {})
    assert s1.snapshotGlobalId and s1.autoName is None
    assert s2.autoName is not None and "@" in s2.autoName
    (vol,) = api.volumeList("v")
    assert vol.parentName == s2.autoName
    chain = api.volumeListSnapshots("v")
    assert [s.name for s in chain] == [s2.autoName, "s1"]
    (snap,) = api.snapshotList("s1")
    assert isinstance(snap, sp.SnapshotSummary)
    assert snap.onVolume == "v" and snap.tags == {"cs": "snapshot"}  # volume tags are not copied
    assert (snap.autoName, snap.bound, snap.deleted, snap.transient) == (False, False, False, False)
    assert api.snapshotList(f"~{s1.snapshotGlobalId}")[0].name == "s1"
    assert isinstance(api.snapshotDescribe("s1"), sp.Snapshot)
    assert isinstance(api.snapshotInfo("s1"), sp.SnapshotInfo)
    assert {s.name for s in api.snapshotsList()} == {"s1", s2.autoName}
    assert {s.name for s in api.snapshotsSpace()} == {"s1", s2.autoName}
    assert isinstance(api.volumesStatus()["s1"], sp.SnapshotStatus)


def test_create_from_parent_and_base_on(api: StrictApi) -> None:
    api.volumeCreate({"name": "src", "size": GiB, "template": "ssd"})
    api.snapshotCreate("src", {"name": "tmpl-snap"})
    child = api.volumeCreate({"name": "child", "parent": "tmpl-snap", "template": "hybrid"})
    assert child.autoName is None
    (c,) = api.volumeList("child")
    assert (c.parentName, c.size, c.templateName) == ("tmpl-snap", GiB, "hybrid")

    clone = api.volumeCreate({"name": "clone", "baseOn": "src"})
    assert clone.autoName is not None
    (t,) = api.snapshotList(clone.autoName)
    assert t.transient and t.bound and t.onVolume == "src"
    assert api.volumeList("clone")[0].parentName == clone.autoName
    # the transient snapshot goes with its last child
    api.volumeDelete("clone")
    api.volumeDelete("src")
    names = {s.name for s in api.snapshotsList()}
    assert clone.autoName not in names


def test_volume_update_size_template_limits_tags_rename(api: StrictApi) -> None:
    api.volumeCreate({"name": "u", "size": GiB, "template": "ssd", "tags": {"a": "1", "b": "2"}})
    api.volumeUpdate("u", {"sizeAdd": GiB})
    assert api.volumeList("u")[0].size == 2 * GiB
    with pytest.raises(ApiError) as e:
        api.volumeUpdate("u", {"size": GiB})
    assert _err(e) == "invalidParam"
    api.volumeUpdate("u", {"size": GiB, "shrinkOk": True})
    api.volumeUpdate("u", {"template": "hdd", "iops": 1000, "bw": 200, "tags": {"a": "", "c": "3"}})
    (v,) = api.volumeList("u")
    assert (v.size, v.templateName, v.placeAll, v.iops, v.bw) == (GiB, "hdd", "hdd", 1000, 200)
    assert v.tags == {"b": "2", "c": "3"}
    api.volumeUpdate("u", {"iops": "-", "rename": "u2"})
    (v,) = api.volumeList("u2")
    assert v.iops == "-"
    with pytest.raises(ApiError) as e:
        api.volumeList("u")
    assert _err(e) == "objectDoesNotExist"


def test_snapshot_update_and_delete_by_id(api: StrictApi) -> None:
    api.volumeCreate({"name": "v", "size": GiB, "template": "ssd"})
    s = api.snapshotCreate("v", {"name": "snap"})
    res = api.snapshotUpdate("snap", {"tags": {"cs": "template"}, "rename": "snap2", "bind": True})
    assert res.ok
    (snap,) = api.snapshotList("snap2")
    assert snap.tags == {"cs": "template"} and snap.bound
    api.snapshotUpdate("snap2", {"bind": False})
    api.volumeDelete("v")
    assert [x.name for x in api.snapshotsList()] == ["snap2"]
    api.snapshotDeleteById(s.snapshotGlobalId)
    assert api.snapshotsList() == []


def test_deleting_a_snapshot_with_children_marks_it_deleted(api: StrictApi) -> None:
    api.volumeCreate({"name": "base", "size": GiB, "template": "ssd"})
    api.snapshotCreate("base", {"name": "cache"})
    api.volumeCreate({"name": "vm1", "parent": "cache"})
    api.volumeDelete("base")
    api.snapshotDelete("cache")
    (snap,) = api.snapshotsList()
    assert snap.deleted and snap.name == "*cache"
    with pytest.raises(ApiError) as e:
        api.volumeCreate({"name": "vm2", "parent": "cache"})
    assert _err(e) == "objectDoesNotExist"
    # the name is free again at once: a rebuilt cache may take it
    api.volumeCreate({"name": "base2", "size": GiB, "template": "ssd"})
    api.snapshotCreate("base2", {"name": "cache"})
    api.volumeDelete("vm1")
    assert [s.name for s in api.snapshotsList()] == ["cache"]


def test_group_snapshot(api: StrictApi) -> None:
    for n in ("d1", "d2"):
        api.volumeCreate({"name": n, "size": GiB, "template": "ssd"})
    res = api.snapshotCreateGroup({"volumes": [{"volume": "d1", "name": "g-d1"}, {"volume": "d2"}],
                                   "tags": {"cs": "group"}})
    assert isinstance(res, sp.GroupSnapshotsResult)
    assert [r.volume for r in res.snapshots] == ["d1", "d2"]
    assert res.snapshots[0].snapshot == "g-d1"
    snaps = {s.globalId: s for s in api.snapshotsList()}
    assert set(snaps) == {r.snapshotGlobalId for r in res.snapshots}
    assert all(s.tags == {"cs": "group"} for s in snaps.values())
    with pytest.raises(ApiError) as e:
        api.snapshotCreateGroup({"volumes": [{"volume": "d1"}, {"volume": "missing"}]})
    assert _err(e) == "objectDoesNotExist"
    assert len(api.snapshotsList()) == 2  # nothing taken when one volume is missing


def test_attachments_reassign_and_wait(api: StrictApi) -> None:
    api.volumeCreate({"name": "v", "size": GiB, "template": "ssd"})
    api.snapshotCreate("v", {"name": "s"})
    api.volumesReassign([{"volume": "v", "rw": [1]}, {"snapshot": "s", "ro": [2, 3]}])
    atts = sorted((a.volume, a.client, a.rights, a.snapshot) for a in api.attachmentsList())
    assert atts == [("s", 2, "ro", True), ("s", 3, "ro", True), ("v", 1, "rw", False)]
    assert all(isinstance(a, sp.AttachmentDesc) and a.globalId for a in api.attachmentsList())
    api.volumesReassignWait({"reassign": [{"snapshot": "s", "detach": "all"}, {"volume": "v", "ro": [1]}]})
    atts = [(a.volume, a.client, a.rights) for a in api.attachmentsList()]
    assert atts == [("v", 1, "ro")]
    with pytest.raises(ApiError) as e:
        api.volumesReassign([{"volume": "v", "rw": [99]}])
    assert _err(e) == "invalidParam"


def test_attached_volume_delete_needs_on_attached(emu: EmulatorHandle, api: StrictApi) -> None:
    api.volumeCreate({"name": "v", "size": GiB, "template": "ssd"})
    api.volumesReassign([{"volume": "v", "rw": [1]}])
    with pytest.raises(ApiError) as e:
        api.volumeDelete("v")
    assert _err(e) == "busy"
    raw_api = emu.api()
    raw_api("POST", True, "VolumeDelete/v", {"onAttached": "detachForce"})
    assert api.volumesList() == [] and api.attachmentsList() == []


def test_revert_refused_while_attached_then_done(api: StrictApi) -> None:
    api.volumeCreate({"name": "v", "size": GiB, "template": "ssd"})
    api.snapshotCreate("v", {"name": "before"})
    api.volumeUpdate("v", {"size": 2 * GiB})
    api.volumesReassign([{"volume": "v", "rw": [1]}])
    with pytest.raises(ApiError) as e:
        api.volumeRevert("v", {"toSnapshot": "before"})
    assert _err(e) == "busy"
    api.volumesReassign([{"volume": "v", "detach": [1]}])
    api.volumeRevert("v", {"toSnapshot": "before"})
    assert api.volumeList("v")[0].size == GiB


def test_freeze_turns_volume_into_snapshot(api: StrictApi) -> None:
    api.volumeCreate({"name": "v", "size": GiB, "template": "ssd"})
    api.volumeFreeze("v")
    assert api.volumesList() == []
    (s,) = api.snapshotList("v")
    assert s.onVolume == "v"


def test_templates(api: StrictApi) -> None:
    assert {t.name for t in api.volumeTemplatesList()} == {"ssd", "hybrid", "hdd"}
    api.volumeTemplateCreate({"name": "gold", "replication": 2, "placeAll": "ssd", "iops": 3000})
    t = api.volumeTemplateDescribe("gold")
    assert isinstance(t, sp.VolumeTemplateDesc) and (t.replication, t.iops, t.placeAll) == (2, 3000, "ssd")
    api.volumeCreate({"name": "g", "size": GiB, "template": "gold"})
    assert api.volumeList("g")[0].iops == 3000
    st = {s.name: s for s in api.volumeTemplatesStatus()}
    assert isinstance(st["gold"], sp.VolumeTemplateStatusDesc)
    assert st["gold"].volumesCount == 1 and st["gold"].size == GiB
    assert st["gold"].stored.capacity == (1 << 40) // 2
    assert 0 < st["gold"].stored.free <= st["gold"].stored.capacity
    with pytest.raises(ApiError) as e:
        api.volumeTemplateDelete("gold")
    assert _err(e) == "busy"
    api.volumeTemplateUpdate("ssd", {"iops": 100})
    assert api.volumeTemplateDescribe("ssd").iops == 100
    with pytest.raises(ApiError) as e:
        api.volumeTemplateDescribe("nope")
    assert _err(e) == "objectDoesNotExist"


def test_services_clients_and_active_requests(emu: EmulatorHandle, api: StrictApi) -> None:
    st = api.servicesList()
    assert isinstance(st, sp.ClusterStatus) and st.clusterStatus == "running"
    assert sorted(st.clients) == [1, 2, 3]
    assert all(c.status == "running" for c in st.clients.values())
    dump = api.clientsConfigDump()
    assert [(c.id, c.configStatus) for c in dump] == [(1, "ok"), (2, "ok"), (3, "ok")]
    emu.faults.client_down(2)
    st = api.servicesList()
    assert st.clients[2].status == "down" and st.clients[1].status == "running"
    assert [c.configStatus for c in api.clientsConfigDump()] == ["ok", "down", "ok"]
    emu.faults.set_active_requests(1, [{"requestId": "9223936579889289248:270215977642998472", "requestIdx": 5,
                                        "volume": "v", "address": 0, "size": 4096, "op": "write",
                                        "msecActive": 1200}])
    req = api.clientActiveRequests(1)
    assert isinstance(req, sp.ClientActiveRequests) and req.requests[0].op == "write"
    with pytest.raises(ApiError) as e:
        api.clientActiveRequests(2)
    assert _err(e) == "busy"
    assert isinstance(api.placementGroupsList()["ssd"], sp.PlacementGroup)


def test_error_names(api: StrictApi) -> None:
    api.volumeCreate({"name": "v", "size": GiB, "template": "ssd"})
    cases = [
        (lambda: api.volumeCreate({"name": "v", "size": GiB, "template": "ssd"}), "objectExists"),
        (lambda: api.volumeDescribe("nope"), "objectDoesNotExist"),
        (lambda: api.volumeCreate({"name": "w", "size": GiB, "template": "nope"}), "objectDoesNotExist"),
        (lambda: api.volumeCreate({"name": "w", "template": "ssd"}), "invalidParam"),
        (lambda: api.snapshotDelete("v"), "objectDoesNotExist"),  # a volume is not a snapshot
        (lambda: api.volumeDescribe("~zz.zz.zz"), "objectDoesNotExist"),
    ]
    for call, name in cases:
        with pytest.raises(ApiError) as e:
            call()
        assert e.value.name == name, e.value
        assert e.value.status != 200
    # snapshots share the namespace with volumes
    with pytest.raises(ApiError) as e:
        api.snapshotCreate("v", {"name": "v"})
    assert _err(e) == "objectExists"


def test_every_supported_query_is_answered_in_a_shape_the_bindings_accept(emu: EmulatorHandle) -> None:
    """One pass over every query the emulator serves, each through its typed bindings method."""
    from integration.storpool_sim import locations
    from integration.storpool_sim.model import QUERIES

    api = emu.strict_api()
    api.volumeTemplateCreate({"name": "t1", "replication": 2, "placeAll": "hdd"})
    api.volumeTemplateUpdate("t1", {"bw": 100, "propagate": True})
    api.volumeCreate({"name": "v", "size": GiB, "template": "t1", "tags": {"cs": "volume"}})
    api.volumeUpdate("v", {"sizeAdd": GiB})
    snap = api.snapshotCreate("v", {"name": "s", "bind": False})
    api.snapshotUpdate("s", {"tags": {"k": "v"}})
    api.snapshotCreateGroup({"volumes": [{"volume": "v", "name": "g"}]})
    api.volumeCreate({"name": "c", "parent": "s"})
    api.volumeCreate({"name": "b", "baseOn": "v"})
    api.volumesReassign([{"volume": "v", "rw": [1]}, {"snapshot": "s", "ro": [2]}])
    api.volumesReassignWait({"reassign": [{"volume": "v", "detach": [1]}, {"snapshot": "s", "detach": "all"}]})
    api.volumeRevert("v", {"toSnapshot": "s"})
    reads = [
        api.volumesList(), api.snapshotsList(), api.volumeList("v"), api.volumeDescribe("v"), api.volumeInfo("v"),
        api.snapshotList("s"), api.snapshotDescribe("s"), api.snapshotInfo("s"), api.volumeListSnapshots("v"),
        api.volumesSpace(), api.snapshotsSpace(), api.volumesStatus(), api.volumesQuickStatus(),
        api.attachmentsList(), api.volumeTemplatesList(), api.volumeTemplateDescribe("t1"),
        api.volumeTemplatesStatus(), api.placementGroupsList(), api.placementGroupDescribe("ssd"),
        api.servicesList(), api.clientsConfigDump(), api.clientConfigWait(1), api.clientActiveRequests(1),
        api.clustersList(), api.locationsList(),
    ]
    assert all(r is not None for r in reads)
    api.volumeFreeze("c")
    api.snapshotDelete("c")
    api.snapshotDeleteById(snap.snapshotGlobalId)
    api.volumeDelete("b")
    api.volumeDelete("v")
    api.snapshotDelete("g")
    assert api.snapshotsList() == []
    api.volumeTemplateDelete("t1")
    # The queries between locations need a second location: test_locations.py drives them.
    assert set(emu.calls) == set(QUERIES) - set(locations.QUERIES)
    assert api.volumesList() == []
