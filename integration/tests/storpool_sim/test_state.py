"""Concurrency, persistence and time: the state a driver relies on stays consistent."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from storpool.spapi import ApiError

from integration.storpool_sim.journal import load_state
from integration.storpool_sim.testing import EmulatorHandle, run_emulator

GiB = 1 << 30


def test_many_threads_creating_one_name_exactly_one_wins(emu: EmulatorHandle) -> None:
    barrier = threading.Barrier(24)

    def create(_i: int) -> str:
        api = emu.api()
        barrier.wait()
        try:
            api.volumeCreate({"name": "contended", "size": GiB, "template": "ssd"})
            return "ok"
        except ApiError as e:
            return str(e.name)

    with ThreadPoolExecutor(24) as pool:
        results = list(pool.map(create, range(24)))
    assert results.count("ok") == 1
    assert results.count("objectExists") == 23
    assert [v.name for v in emu.api().volumesList()] == ["contended"]


def test_concurrent_mixed_traffic_keeps_state_consistent(emu: EmulatorHandle) -> None:
    def work(i: int) -> None:
        api = emu.api()
        name = f"v{i}"
        api.volumeCreate({"name": name, "size": GiB, "template": "ssd", "tags": {"i": str(i)}})
        api.snapshotCreate(name, {"name": f"{name}-s"})
        api.volumesReassign([{"volume": name, "rw": [1 + i % 3]}])
        api.volumeUpdate(name, {"sizeAdd": GiB})
        api.volumesList()
        if i % 2:
            api("POST", True, f"VolumeDelete/{name}", {"onAttached": "detachForce"})

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(work, range(40)))
    api = emu.strict_api()
    vols = {v.name: v for v in api.volumesList()}
    assert set(vols) == {f"v{i}" for i in range(0, 40, 2)}
    assert all(v.size == 2 * GiB for v in vols.values())
    assert len(api.snapshotsList()) == 40
    assert len({v.globalId for v in vols.values()}) == 20
    assert len(api.attachmentsList()) == 20
    state = load_state(emu.data_dir)  # the snapshot with the journal of changes since applied
    assert state is not None and len(state["objects"]) == 60


def test_restart_keeps_objects_tags_content_and_attachments(tmp_path: Path) -> None:
    data, dev = tmp_path / "data", tmp_path / "dev"
    with run_emulator(data, dev, use_loop=False) as sp:
        api = sp.api()
        gid = api.volumeCreate({"name": "keep", "size": GiB, "template": "hdd", "tags": {"uuid": "u"}}).globalId
        sp.write_object(gid, 0, b"persisted")
        api.snapshotCreate("keep", {"name": "keep-s", "bind": True})
        api.volumesReassign([{"volume": "keep", "rw": [2]}])
        gen = api.volumesList() and sp.model.generation
    with run_emulator(data, dev, use_loop=False) as sp:
        api = sp.strict_api()
        (v,) = api.volumeList("keep")
        assert (v.globalId, v.templateName, v.tags, v.parentName) == (gid, "hdd", {"uuid": "u"}, "keep-s")
        assert api.snapshotList("keep-s")[0].bound
        assert [(a.volume, a.client, a.rights) for a in api.attachmentsList()] == [("keep", 2, "rw")]
        with open(sp.device_path(2, gid), "rb") as f:
            assert f.read(9) == b"persisted"
        assert sp.model.generation >= gen
        # ids keep growing after a restart: no global id is ever reused
        new = api.volumeCreate({"name": "new", "size": GiB, "template": "ssd"}).globalId
        assert new != gid


def test_restart_with_fewer_clients_drops_their_attachments(tmp_path: Path) -> None:
    data, dev = tmp_path / "data", tmp_path / "dev"
    with run_emulator(data, dev, use_loop=False, clients=(1, 2, 3)) as sp:
        sp.api().volumeCreate({"name": "v", "size": GiB, "template": "ssd"})
        sp.api().volumesReassign([{"volume": "v", "rw": [3]}, ])
    with run_emulator(data, dev, use_loop=False, clients=(1, 2)) as sp:
        assert sp.api().attachmentsList() == []


class _Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


def test_delete_after_expires_snapshots(tmp_path: Path) -> None:
    clock = _Clock()
    with run_emulator(tmp_path / "d", tmp_path / "v", use_loop=False, clock=clock) as sp:
        api = sp.strict_api()
        api.volumeCreate({"name": "v", "size": GiB, "template": "ssd"})
        api.snapshotCreate("v", {"name": "later", "deleteAfter": 3600, "tags": {"cs": "delayDelete"}})
        api.snapshotCreate("v", {"name": "dated", "targetDeleteDate": int(clock.t) + 60})
        (s,) = api.snapshotList("later")
        assert s.targetDeleteDate == int(clock.t) + 3600
        clock.t += 61
        names = {x.name for x in api.snapshotsList()}
        assert "later" in names and "*dated" in names  # "dated" has a child (later): marked deleted
        clock.t += 3600
        api.volumeDelete("v")
        assert api.snapshotsList() == []


@pytest.mark.parametrize("bound", [True, False])
def test_bound_snapshot_goes_with_its_last_child(emu: EmulatorHandle, bound: bool) -> None:
    api = emu.api()
    api.volumeCreate({"name": "v", "size": GiB, "template": "ssd"})
    api.snapshotCreate("v", {"name": "b", "bind": bound})
    api.volumeCreate({"name": "c", "parent": "b"})
    api.volumeDelete("v")
    assert [s.name for s in api.snapshotsList()] == ["b"]
    api.volumeDelete("c")
    assert [s.name for s in api.snapshotsList()] == ([] if bound else ["b"])


def test_a_change_writes_what_it_touched_not_the_whole_state(tmp_path: Path) -> None:
    """Persistence cost per change does not grow with the cluster; what was
    answered survives a crash (no orderly close), a torn last record is ignored."""
    from integration.storpool_sim.journal import JOURNAL, SNAPSHOT

    data = tmp_path / "data"
    with run_emulator(data, tmp_path / "dev", use_loop=False) as sp:
        api = sp.api()
        sizes = []
        for i in range(300):
            api.volumeCreate({"name": f"v{i}", "size": GiB, "template": "ssd", "tags": {"n": "x"}})
            if i in (10, 299):
                sizes.append(len((data / JOURNAL).read_bytes().splitlines()[-1]))
        assert sizes[1] <= sizes[0] + 8  # (longer names and ids only)
        snapshot_mtime = (data / SNAPSHOT).stat().st_mtime_ns
        api.volumeUpdate("v5", {"tags": {"n": "changed"}})
        api("POST", True, "VolumeDelete/v6", {"onAttached": "detachForce"})
        assert (data / SNAPSHOT).stat().st_mtime_ns == snapshot_mtime  # not rewritten per change
        # What a restart after kill -9 would read (the running emulator never closed):
        with open(data / JOURNAL, "a") as f:
            f.write('{"generation": 99, "put": [')  # a record torn mid-write
        state = load_state(data)
        assert state is not None
        by_name = {o["name"]: o for o in state["objects"]}
        assert len(by_name) == 299 and "v6" not in by_name
        assert by_name["v5"]["tags"] == {"n": "changed"}
        assert state["generation"] == sp.model.generation
    with run_emulator(data, tmp_path / "dev", use_loop=False) as sp:
        api = sp.strict_api()
        assert len(api.volumesList()) == 299
        assert api.volumeList("v5")[0].tags == {"n": "changed"}


def test_the_journal_is_compacted_once_it_outgrows_the_state(tmp_path: Path) -> None:
    from integration.storpool_sim.journal import JOURNAL, MIN_COMPACT

    data = tmp_path / "data"
    with run_emulator(data, tmp_path / "dev", use_loop=False) as sp:
        api = sp.api()
        api.volumeCreate({"name": "v", "size": GiB, "template": "ssd"})
        for i in range(MIN_COMPACT + 5):
            api.volumeUpdate("v", {"tags": {"i": str(i)}})
        assert len((data / JOURNAL).read_bytes().splitlines()) < MIN_COMPACT
    with run_emulator(data, tmp_path / "dev", use_loop=False) as sp:
        assert sp.strict_api().volumeList("v")[0].tags == {"i": str(MIN_COMPACT + 4)}
