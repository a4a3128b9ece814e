"""Rules of the object model that a driver depends on, one behaviour per test."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from storpool.spapi import ApiError

from integration.needs import need_root
from integration.storpool_sim.dataplane import loop_supported
from integration.storpool_sim.server import Emulator
from integration.storpool_sim.testing import EmulatorHandle, StrictApi, run_emulator

GiB = 1 << 30
MiB = 1 << 20


def _name(call: object) -> str:
    assert callable(call)
    with pytest.raises(ApiError) as e:
        call()
    return str(e.value.name)


def test_transient_snapshot_cannot_be_attached(api: StrictApi) -> None:
    api.volumeCreate({"name": "v", "size": GiB, "template": "ssd"})
    auto = api.volumeCreate({"name": "c", "baseOn": "v"}).autoName
    assert _name(lambda: api.volumesReassign([{"snapshot": auto, "ro": [1]}])) == "notAllowed"


def test_snapshots_attach_read_only_only(emu: EmulatorHandle, api: StrictApi) -> None:
    api.volumeCreate({"name": "v", "size": GiB, "template": "ssd"})
    api.snapshotCreate("v", {"name": "s"})
    # the bindings would refuse `rw` for a snapshot before sending; a raw client gets invalidParam
    with pytest.raises(ApiError) as e:
        emu.api()("POST", True, "VolumesReassign", [{"snapshot": "s", "rw": [1]}])
    assert e.value.name == "invalidParam"


def test_reassign_is_all_or_nothing(api: StrictApi) -> None:
    api.volumeCreate({"name": "a", "size": GiB, "template": "ssd"})
    assert _name(lambda: api.volumesReassign([{"volume": "a", "rw": [1]}, {"volume": "missing", "rw": [1]}])) \
        == "objectDoesNotExist"
    assert api.attachmentsList() == []


def test_rename_moves_the_name_link_of_an_attached_volume(emu: EmulatorHandle, api: StrictApi) -> None:
    gid = api.volumeCreate({"name": "old", "size": GiB, "template": "ssd"}).globalId
    api.volumesReassign([{"volume": "old", "rw": [1]}])
    assert os.path.lexists(emu.name_path(1, "old"))
    api.volumeUpdate("old", {"rename": "new"})
    assert not os.path.lexists(emu.name_path(1, "old"))
    assert os.path.realpath(emu.name_path(1, "new")) == os.path.realpath(emu.device_path(1, gid))
    assert [a.volume for a in api.attachmentsList()] == ["new"]


def test_attachment_positions_are_unique_per_client(api: StrictApi) -> None:
    for n in ("a", "b", "c"):
        api.volumeCreate({"name": n, "size": GiB, "template": "ssd"})
        api.volumesReassign([{"volume": n, "rw": [1, 2]}])
    for client in (1, 2):
        pos = [a.pos for a in api.attachmentsList() if a.client == client]
        assert sorted(pos) == [0, 1, 2]


def test_insufficient_resources_when_full(tmp_path: Path) -> None:
    with run_emulator(tmp_path / "d", tmp_path / "v", use_loop=False, capacity=4 * MiB) as sp:
        api = sp.api()
        gid = api.volumeCreate({"name": "v", "size": GiB, "template": "ssd"}).globalId
        # Data reaches StorPool through an attached device, as on a real host.
        api.volumesReassign([{"volume": "v", "rw": [1]}])
        with open(sp.device_path(1, gid), "r+b") as f:
            f.write(os.urandom(2 * MiB))
            f.flush()
            os.fsync(f.fileno())
        assert _name(lambda: api.volumeCreate({"name": "w", "size": GiB, "template": "ssd"})) \
            == "insufficientResources"
        (st,) = [s for s in api.volumeTemplatesStatus() if s.name == "ssd"]
        assert st.stored.free == 0 and st.storedSize >= 2 * MiB


def test_size_must_not_shrink_below_parent(api: StrictApi) -> None:
    api.volumeCreate({"name": "v", "size": 2 * GiB, "template": "ssd"})
    api.snapshotCreate("v", {"name": "s"})
    assert _name(lambda: api.volumeCreate({"name": "c", "parent": "s", "size": GiB})) == "invalidParam"
    api.volumeCreate({"name": "c", "parent": "s", "size": 4 * GiB})
    assert api.volumeList("c")[0].size == 4 * GiB


def test_revert_only_to_a_related_snapshot(api: StrictApi) -> None:
    api.volumeCreate({"name": "a", "size": GiB, "template": "ssd"})
    api.volumeCreate({"name": "b", "size": GiB, "template": "ssd"})
    api.snapshotCreate("b", {"name": "b-s"})
    assert _name(lambda: api.volumeRevert("a", {"toSnapshot": "b-s"})) == "invalidParam"
    # a later snapshot of the same volume is still a valid target after reverting to an earlier one
    api.snapshotCreate("a", {"name": "a-1"})
    api.snapshotCreate("a", {"name": "a-2"})
    api.volumeRevert("a", {"toSnapshot": "a-1"})
    api.volumeRevert("a", {"toSnapshot": "a-2"})
    assert api.volumeList("a")[0].parentName == "a-2"


def test_attached_snapshot_cannot_be_deleted(api: StrictApi) -> None:
    api.volumeCreate({"name": "v", "size": GiB, "template": "ssd"})
    api.snapshotCreate("v", {"name": "s"})
    api.volumesReassign([{"snapshot": "s", "ro": [1]}])
    assert _name(lambda: api.snapshotDelete("s")) == "busy"
    api.volumesReassign([{"snapshot": "s", "detach": "all"}])
    api.snapshotDelete("s")


def test_unknown_client_for_active_requests(api: StrictApi) -> None:
    assert _name(lambda: api.clientActiveRequests(42)) == "objectDoesNotExist"


@pytest.mark.root
def test_crash_restart_releases_orphan_loop_devices(tmp_path: Path) -> None:
    need_root()
    assert loop_supported()
    data, dev = tmp_path / "data", tmp_path / "dev"
    emu = Emulator(data, dev, token="t", use_loop=True).start()
    try:
        api = EmulatorHandle(emu, data, dev).api()
        gid = api.volumeCreate({"name": "v", "size": 32 * MiB, "template": "ssd"}).globalId
        api.volumesReassign([{"volume": "v", "rw": [1]}])
    finally:
        emu._httpd.shutdown()  # a crash: the server dies, devices and state are left as they are
        emu._httpd.server_close()
    backing = str(emu.dataplane.path(gid))
    try:
        with run_emulator(data, dev, token="t", use_loop=True) as sp:
            loops = subprocess.run(["losetup", "-j", backing], capture_output=True, text=True, check=True).stdout
            assert len(loops.strip().splitlines()) == 1
            assert os.readlink(sp.device_path(1, gid)) == loops.split(":")[0]
    finally:
        # by backing file, never by device name: a freed loop number may already be someone else's
        for line in subprocess.run(["losetup", "-j", backing], capture_output=True, text=True).stdout.splitlines():
            subprocess.run(["losetup", "-d", line.split(":")[0]], check=False)
    assert subprocess.run(["losetup", "-j", backing], capture_output=True, text=True, check=True).stdout == ""
