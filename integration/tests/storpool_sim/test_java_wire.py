"""Every wire form of the Java plugin (as its source sends them), replayed through raw HTTP.

A faithful emulator accepts exactly what real StorPool accepts from the Java plugin: anonymous
objects (`"name": ""`), JSON nulls for fields not given, tags without `pool`, copies with
`baseOn` and no name, and group snapshots whose members are anonymous.
"""

from __future__ import annotations

from typing import Any

from integration.javacloud import JavaWire
from integration.storpool_sim.testing import EmulatorHandle

MiB = 1 << 20


def _get(emu: EmulatorHandle, query: str) -> list[dict[str, Any]]:
    status, body = emu.raw("GET", f"/ctrl/1.0/MultiCluster/{query}")
    assert status == 200, body
    data: list[dict[str, Any]] = body["data"]
    return data


def test_every_java_wire_form_is_accepted_as_real_storpool_does(emu: EmulatorHandle) -> None:
    wire = JavaWire(emu, "ssd")
    vm = "0b3f5a52-0000-4000-8000-00000000c0de"

    # VolumeCreate {"name": "", "iops": null, "parent": null, "size": N, "template": T, "tags": {...}}
    vol = wire.volume_create("0b3f5a52-0000-4000-8000-000000000001", None, 4 * MiB, vm, None, "volume", None)
    assert wire.sent[-1] == ("VolumeCreate", {"name": "", "iops": None, "parent": None, "size": 4 * MiB,
                                              "template": "ssd", "tags": {
                                                  "uuid": "0b3f5a52-0000-4000-8000-000000000001", "cvm": vm,
                                                  "cs": "volume"}})
    [v] = _get(emu, f"Volume/{vol}")
    assert v["name"] == vol and v["size"] == 4 * MiB and v["templateName"] == "ssd"
    assert v["iops"] == "-" and v["parentName"] == ""  # null is "not given", not a value
    assert v["tags"] == {"uuid": "0b3f5a52-0000-4000-8000-000000000001", "cvm": vm, "cs": "volume"}

    # VolumeUpdate {"iops": null, "size": N, "shrinkOk": null}
    wire.volume_update(vol, 8 * MiB, None, None)
    assert _get(emu, f"Volume/{vol}")[0]["size"] == 8 * MiB
    wire.volume_update_iops_and_tags(vol, vm, 700, "weekly")
    [v] = _get(emu, f"Volume/{vol}")
    assert v["iops"] == 700 and v["tags"]["vc-policy"] == "weekly"

    # VolumeSnapshot {"name": "", "tags": {...}}: an anonymous snapshot, tags as sent, no `pool`
    snap = wire.volume_snapshot(vol, "0b3f5a52-0000-4000-8000-000000000002", vm, "snapshot", None)
    [s] = _get(emu, f"Snapshot/{snap}")
    assert s["name"] == snap and s["autoName"] is True
    assert s["tags"] == {"uuid": "0b3f5a52-0000-4000-8000-000000000002", "cvm": vm, "cs": "snapshot"}

    # Volume from the snapshot: VolumeCreate with parent = ~gid
    child = wire.volume_create("0b3f5a52-0000-4000-8000-000000000003", snap, 8 * MiB, None, None, "volume", None)
    assert _get(emu, f"Volume/{child}")[0]["parentName"] == snap

    # Copy: {"baseOn": "~gid", "template": T, "tags": {...}}, no name
    copy = wire.volume_copy("0b3f5a52-0000-4000-8000-000000000004", vol, "volume", None, None, None)
    assert "name" not in wire.sent[-1][1] and wire.sent[-1][1]["baseOn"] == vol
    [c] = _get(emu, f"Volume/{copy}")
    assert c["size"] == 8 * MiB and c["parentName"]  # a child of the transient snapshot of `vol`

    # VolumesGroupSnapshot {"tags": {...}, "volumes": [{"name": "", "volume": "~gid"}, ...]}
    members = wire.group_snapshot([vol, child], vm, "0b3f5a52-0000-4000-8000-000000000005")
    assert set(members) == {vol[1:], child[1:]}
    for ref in members.values():
        [m] = _get(emu, f"Snapshot/{ref}")
        assert m["name"] == ref and m["autoName"] is True
        assert m["tags"] == {"uuid": "0b3f5a52-0000-4000-8000-000000000005", "cvm": vm, "cs": "group"}

    # VolumeRevert {"toSnapshot": "~gid"} (after the Java plugin's forced detach-all)
    wire.detach_all_forced(vol, False)
    wire.volume_revert(vol, snap)
    assert _get(emu, f"Volume/{vol}")[0]["parentName"] == snap

    # VolumeUpdate {"template": T}; SnapshotDelete after detach-all; VolumeDelete {"onAttached": "detachForce"}
    wire.volume_update_template(child)
    wire.snapshot_delete(members[child[1:]])
    wire.volume_delete(copy)
    assert {x["name"] for x in _get(emu, "VolumesList")} == {vol, child}
    assert not any("pool" in (x.get("tags") or {}) for x in _get(emu, "VolumesList") + _get(emu, "SnapshotsList"))


def test_named_forms_still_refuse_an_invalid_name(emu: EmulatorHandle) -> None:
    """`""` means anonymous; anything else must still be a valid name."""
    status, _ = emu.raw("POST", "/ctrl/1.0/MultiCluster/VolumeCreate", {"name": "", "size": MiB, "template": "ssd"})
    assert status == 200
    gid = _get(emu, "VolumesList")[0]["globalId"]
    for path, body in (
        (f"VolumeSnapshot/~{gid}", {"name": "bad name"}),
        ("VolumesGroupSnapshot", {"volumes": [{"name": "a/b", "volume": f"~{gid}"}]}),
        ("VolumeCreate", {"name": "bad name", "size": MiB, "template": "ssd"}),
    ):
        status, body = emu.raw("POST", "/ctrl/1.0/MultiCluster/" + path, body)
        assert status != 200 and body["error"]["name"] == "invalidParam", path
