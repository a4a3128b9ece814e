"""Two linked StorPool locations: a snapshot exported by one and copied by the other, through
the official bindings (strictly typed), with the data read back from both sides' objects."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from storpool.spapi import ApiError, ApiOk

from integration.storpool_sim import locations
from integration.storpool_sim.testing import EmulatorHandle, run_emulator

GiB = 1 << 30


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[EmulatorHandle, EmulatorHandle]]:
    with run_emulator(tmp_path / "a", tmp_path / "adev", use_loop=False) as a, \
            run_emulator(tmp_path / "b", tmp_path / "bdev", use_loop=False, cluster_name="far", cluster_id="c",
                         location_id="far", location_name="far-location") as b:
        a.emulator.link_location(b.emulator)
        yield a, b


def _reconcile(handle: EmulatorHandle, name: str) -> None:
    """SnapshotReconcile is not among the bindings' methods: sent through their generic call, its
    answer checked as ApiOk."""
    ApiOk(handle.api()("POST", True, f"SnapshotReconcile/{name}", None))


def _exported_snapshot(a: EmulatorHandle) -> str:
    api = a.strict_api()
    api.volumeCreate({"name": "v", "size": GiB, "template": "ssd"})
    a.write_object(a.model.lookup("v", "volume").gid, 4096, b"written before the snapshot")
    gid = str(api.snapshotCreate("v", {"name": "s", "tags": {"cs": "snapshot"}}).snapshotGlobalId)
    a.write_object(a.model.lookup("v", "volume").gid, 4096, b"written after the snapshot!")
    return gid


def test_export_list_copy_reconcile_unexport(pair: tuple[EmulatorHandle, EmulatorHandle]) -> None:
    a, b = pair
    gid = _exported_snapshot(a)
    api_a, api_b = a.strict_api(), b.strict_api()
    assert [(loc.id, loc.name) for loc in api_a.locationsList()["locations"]] == [("far", "far-location")]
    assert [(loc.id, loc.name) for loc in api_b.locationsList()["locations"]] == [("lab", "lab-location")]
    assert api_b.snapshotsRemoteList()["snapshots"] == []

    api_a.snapshotExport({"snapshot": f"~{gid}", "location": "far-location"})
    api_a.snapshotExport({"snapshot": "s", "location": "far-location"})  # again: still one export
    exports = api_a.exportsList()["exports"]
    assert [(e.snapshot, e.location, e.globalId) for e in exports] == [("s", "far-location", gid)]
    remote = api_b.snapshotsRemoteList()["snapshots"]
    assert [(r.remoteId, r.location, r.size, r.localSnapshot) for r in remote] == [(gid, "lab-location", GiB, None)]

    api_b.snapshotFromRemote({"remoteLocation": "lab-location", "remoteId": gid, "template": "hdd",
                              "tags": {"cs": "snapshot", "uuid": "u-1"}})
    copy = api_b.snapshotList(f"~{gid}")[0]
    assert (copy.globalId, copy.templateName, copy.tags, copy.recoveringFromRemote) == (
        gid, "hdd", {"cs": "snapshot", "uuid": "u-1"}, False)
    assert b.read_object(gid, 4096, 27) == b"written before the snapshot"
    assert api_b.snapshotsRemoteList()["snapshots"][0].localSnapshot == f"~{gid}"
    _reconcile(b, f"~{gid}")
    # A volume made from the copy in the far location reads the snapshot's data.
    made = api_b.volumeCreate({"name": "restored", "parent": f"~{gid}"})
    assert b.read_object(str(made.globalId), 4096, 27) == b"written before the snapshot"

    with pytest.raises(ApiError) as still:
        api_a.snapshotDelete("s")
    assert "still exported" in str(still.value.desc)
    api_a.snapshotUnexport({"snapshot": "s", "location": "far-location"})
    assert api_a.exportsList()["exports"] == []
    api_a.snapshotDelete("s")


def test_copy_needs_an_export_and_a_known_location(pair: tuple[EmulatorHandle, EmulatorHandle]) -> None:
    a, b = pair
    gid = _exported_snapshot(a)
    api_a, api_b = a.strict_api(), b.strict_api()
    body = {"remoteLocation": "lab-location", "remoteId": gid, "template": "ssd"}
    with pytest.raises(ApiError) as not_exported:
        api_b.snapshotFromRemote(body)
    assert not_exported.value.name == "objectDoesNotExist"
    with pytest.raises(ApiError) as unknown:
        api_a.snapshotExport({"snapshot": "s", "location": "nowhere"})
    assert unknown.value.name == "objectDoesNotExist"
    api_a.snapshotExport({"snapshot": "s", "location": "far-location"})
    with pytest.raises(ApiError) as no_policy:
        api_b.snapshotFromRemote({"remoteLocation": "lab-location", "remoteId": gid})
    assert no_policy.value.name == "invalidParam"
    # The Java plugin's wire form: `"name": ""` for an anonymous copy (the bindings refuse "").
    status, answer = b.raw("POST", "/ctrl/1.0/SnapshotFromRemote", {**body, "name": "", "tags": {"cs": "snapshot"}})
    assert (status, answer["data"]["ok"]) == (200, True)
    assert b.model.lookup(f"~{gid}", "snapshot").name is None
    with pytest.raises(ApiError) as twice:
        api_b.snapshotFromRemote(body)
    assert twice.value.name == "objectExists"
    assert set(a.calls) | set(b.calls) >= set(locations.QUERIES) - {"SnapshotReconcile", "SnapshotUnexport",
                                                                        "ExportsList", "SnapshotsRemoteList"}


def test_unexport_waits_for_a_copy_still_arriving(pair: tuple[EmulatorHandle, EmulatorHandle]) -> None:
    a, b = pair
    gid = _exported_snapshot(a)
    api_a, api_b = a.strict_api(), b.strict_api()
    b.model.transfer_seconds = 3600
    api_a.snapshotExport({"snapshot": "s", "location": "far-location"})
    api_b.snapshotFromRemote({"remoteLocation": "lab-location", "remoteId": gid, "template": "ssd"})
    assert api_b.snapshotList(f"~{gid}")[0].recoveringFromRemote is True
    with pytest.raises(ApiError) as busy:
        api_a.snapshotUnexport({"snapshot": "s", "location": "far-location"})
    assert busy.value.name == "busy"
    api_a.snapshotUnexport({"snapshot": "s", "all": True, "force": True})
    assert api_a.exportsList()["exports"] == []


def test_exports_and_copies_survive_a_restart(tmp_path: Path) -> None:
    with run_emulator(tmp_path / "a", tmp_path / "adev", use_loop=False) as a, \
            run_emulator(tmp_path / "b", tmp_path / "bdev", use_loop=False, location_id="far",
                         location_name="far-location") as b:
        a.emulator.link_location(b.emulator)
        gid = _exported_snapshot(a)
        a.strict_api().snapshotExport({"snapshot": "s", "location": "far-location"})
        b.model.transfer_seconds = 3600
        b.strict_api().snapshotFromRemote({"remoteLocation": "lab-location", "remoteId": gid, "template": "ssd"})
    with run_emulator(tmp_path / "a", tmp_path / "adev", use_loop=False) as a, \
            run_emulator(tmp_path / "b", tmp_path / "bdev", use_loop=False, location_id="far",
                         location_name="far-location") as b:
        assert [e.globalId for e in a.strict_api().exportsList()["exports"]] == [gid]
        copy = b.strict_api().snapshotList(f"~{gid}")[0]
        assert copy.recoveringFromRemote is True
        assert b.read_object(gid, 4096, 27) == b"written before the snapshot"


def test_the_java_plugins_wire_forms_between_locations(pair: tuple[EmulatorHandle, EmulatorHandle]) -> None:
    """StorPoolSnapshotStrategy.copySnapshot and the abandon collector's recovery check, as
    StorPoolUtil sends them (raw HTTP): SnapshotUpdate for the cluster id, SnapshotExport,
    SnapshotFromRemote with `"name": ""`, SnapshotReconcile with no body, the MultiCluster
    SnapshotsList it reads `recoveringFromRemote` from, SnapshotUnexport with force and all."""
    a, b = pair
    gid = _exported_snapshot(a)

    def ok(handle: EmulatorHandle, path: str, body: Any = None) -> Any:
        status, answer = handle.raw("POST" if body is not None or "Reconcile" in path else "GET",
                                    f"/ctrl/1.0/{path}", body)
        assert status == 200, answer
        return answer

    assert ok(a, f"MultiCluster/SnapshotUpdate/~{gid}", {})["data"]["clusterId"] == "lab.b"
    ok(a, "SnapshotExport", {"snapshot": f"~{gid}", "location": "far-location"})
    ok(b, "SnapshotFromRemote", {"remoteId": gid, "remoteLocation": "lab-location", "template": "ssd", "name": "",
                                 "tags": {"cs": "snapshot", "uuid": "0b3f5a52-0000-4000-8000-000000000009"}})
    ok(b, f"SnapshotReconcile/~{gid}")
    listed = ok(b, "MultiCluster/SnapshotsList")["data"]
    assert [(s["name"], s["recoveringFromRemote"]) for s in listed] == [(f"~{gid}", False)]
    status, refused = a.raw("POST", f"/ctrl/1.0/MultiCluster/SnapshotDelete/~{gid}")
    assert status == 400 and "still exported" in refused["error"]["descr"]
    ok(a, "SnapshotUnexport", {"snapshot": f"~{gid}", "force": True, "all": True})
    ok(a, f"MultiCluster/SnapshotDelete/~{gid}", {})
