"""The data plane for real: loop devices on a reflink XFS, written and read back by checksum."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from storpool.spapi import ApiError

from integration.storpool_sim.testing import EmulatorHandle, run_emulator

MiB = 1 << 20
GiB = 1 << 30


def _write(dev: Path, offset: int, data: bytes) -> None:
    fd = os.open(dev, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def _digest(dev: Path, length: int, offset: int = 0) -> str:
    h = hashlib.sha256()
    fd = os.open(dev, os.O_RDONLY)
    try:
        pos = offset
        while pos < offset + length:
            chunk = os.pread(fd, min(4 * MiB, offset + length - pos), pos)
            assert chunk, f"short read on {dev} at {pos}"
            h.update(chunk)
            pos += len(chunk)
    finally:
        os.close(fd)
    return h.hexdigest()


def _size(dev: Path) -> int:
    fd = os.open(dev, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def _attach(sp: EmulatorHandle, ref: str, client: int, rights: str = "rw") -> Path:
    kind = "snapshot" if rights == "ro" and not ref.startswith("vol") else "volume"
    sp.api().volumesReassign([{kind: ref, rights: [client]}])
    gid = next(a.globalId for a in sp.api().attachmentsList() if a.client == client and
               (a.volume == ref or f"~{a.globalId}" == ref))
    return sp.device_path(client, gid)


def _detach(sp: EmulatorHandle, ref: str, kind: str = "volume", force: bool = False) -> None:
    sp.api().volumesReassign([{kind: ref, "detach": "all", "force": force}])


@contextmanager
def _holder(path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process keeping the device open, like qemu of a running VM."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys,time; f=open(sys.argv[1],'rb'); print('open', flush=True); time.sleep(120)",
         str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "open"
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.root
def test_attach_exposes_a_loop_device_with_both_links(sp_emulator: EmulatorHandle) -> None:
    api = sp_emulator.api()
    gid = api.volumeCreate({"name": "vol-a", "size": 64 * MiB, "template": "ssd"}).globalId
    dev = _attach(sp_emulator, "vol-a", 1)
    target = os.readlink(dev)
    assert target.startswith("/dev/loop")
    assert os.readlink(sp_emulator.name_path(1, "vol-a")) == target
    assert dev == sp_emulator.device_path(1, gid) and _size(dev) == 64 * MiB
    assert not sp_emulator.device_path(2, gid).exists()
    _detach(sp_emulator, "vol-a")
    assert not os.path.lexists(dev) and not os.path.lexists(sp_emulator.name_path(1, "vol-a"))
    assert str(sp_emulator.object_file(gid)) not in subprocess.run(
        ["losetup", "-a"], capture_output=True, text=True, check=True).stdout


@pytest.mark.root
def test_snapshot_clone_baseon_revert_resize_by_checksum(sp_emulator: EmulatorHandle) -> None:
    api = sp_emulator.api()
    api.volumeCreate({"name": "vol-d", "size": 128 * MiB, "template": "ssd"})
    dev = _attach(sp_emulator, "vol-d", 1)
    first = os.urandom(8 * MiB)
    _write(dev, 16 * MiB, first)
    before = _digest(dev, 128 * MiB)

    api.snapshotCreate("vol-d", {"name": "snap-d"})
    _write(dev, 16 * MiB, os.urandom(8 * MiB))
    after = _digest(dev, 128 * MiB)
    assert after != before

    snap_dev = _attach(sp_emulator, "snap-d", 2, "ro")
    assert _digest(snap_dev, 128 * MiB) == before
    with pytest.raises(OSError):
        _write(snap_dev, 0, b"x" * 4096)  # snapshots are read-only devices

    api.volumeCreate({"name": "vol-child", "parent": "snap-d"})
    assert _digest(_attach(sp_emulator, "vol-child", 3), 128 * MiB) == before

    clone = api.volumeCreate({"name": "vol-clone", "baseOn": "vol-d"})
    assert clone.autoName
    assert _digest(_attach(sp_emulator, "vol-clone", 2), 128 * MiB) == after

    # resize while attached: the device grows with the volume
    api.volumeUpdate("vol-d", {"sizeAdd": 64 * MiB})
    assert _size(dev) == 192 * MiB
    assert _digest(dev, 128 * MiB) == after

    # revert needs the volume detached; afterwards it holds the snapshot's content and size
    _detach(sp_emulator, "vol-d")
    api.volumeRevert("vol-d", {"toSnapshot": "snap-d"})
    dev = _attach(sp_emulator, "vol-d", 1)
    assert _size(dev) == 128 * MiB
    assert _digest(dev, 128 * MiB) == before


@pytest.mark.root
def test_detach_of_an_open_device_needs_force(sp_emulator: EmulatorHandle) -> None:
    api = sp_emulator.api()
    gid = api.volumeCreate({"name": "vol-o", "size": 32 * MiB, "template": "ssd"}).globalId
    dev = _attach(sp_emulator, "vol-o", 1)
    loop = os.readlink(dev)
    with _holder(dev):
        with pytest.raises(ApiError) as e:
            _detach(sp_emulator, "vol-o")
        assert e.value.name == "invalidParam" and "is open at" in e.value.desc
        with pytest.raises(ApiError) as e:
            api("POST", True, "VolumeDelete/vol-o", {"onAttached": "detach"})
        assert "is open at" in e.value.desc
        assert [a.client for a in api.attachmentsList()] == [1]
        _detach(sp_emulator, "vol-o", force=True)
        assert api.attachmentsList() == [] and not os.path.lexists(dev)
    # the holder is gone: the lazily detached loop device has been released too
    out = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=True).stdout
    assert str(sp_emulator.object_file(gid)) not in out, (loop, out)


@pytest.mark.root
def test_open_detection_sees_this_process_too(sp_emulator: EmulatorHandle) -> None:
    api = sp_emulator.api()
    api.volumeCreate({"name": "vol-self", "size": 32 * MiB, "template": "ssd"})
    dev = _attach(sp_emulator, "vol-self", 1)
    fd = os.open(dev, os.O_RDONLY)
    try:
        with pytest.raises(ApiError):
            _detach(sp_emulator, "vol-self")
    finally:
        os.close(fd)
    _detach(sp_emulator, "vol-self")
    assert api.attachmentsList() == []


def _used(path: Path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


@pytest.mark.root
def test_reflink_snapshot_and_clone_copy_no_data(sp_emulator: EmulatorHandle) -> None:
    api = sp_emulator.api()
    gid = api.volumeCreate({"name": "vol-big", "size": GiB, "template": "ssd"}).globalId
    dev = _attach(sp_emulator, "vol-big", 1)
    block = os.urandom(MiB)
    fd = os.open(dev, os.O_WRONLY)
    try:
        for i in range(256):
            os.pwrite(fd, block, i * 4 * MiB)
        os.fsync(fd)
    finally:
        os.close(fd)
    f = sp_emulator.object_file(gid)
    assert f.stat().st_blocks * 512 >= 256 * MiB
    used0 = _used(f.parent)
    api.snapshotCreate("vol-big", {"name": "big-snap"})
    api.volumeCreate({"name": "big-clone", "parent": "big-snap"})
    api.volumeCreate({"name": "big-clone2", "baseOn": "vol-big"})
    grown = _used(f.parent) - used0
    assert grown < 16 * MiB, f"{grown} bytes used by reflink clones of 256 MiB"
    assert sp_emulator.emulator.dataplane.reflink is True


def test_sparse_copies_skip_holes(sp_emulator_sparse: EmulatorHandle) -> None:
    sp = sp_emulator_sparse
    api = sp.api()
    gid = api.volumeCreate({"name": "vol-s", "size": GiB, "template": "ssd"}).globalId
    f = sp.object_file(gid)
    with open(f, "r+b") as fh:
        fh.seek(512 * MiB)
        fh.write(os.urandom(4 * MiB))
    snap = api.snapshotCreate("vol-s", {"name": "s"}).snapshotGlobalId
    sf = sp.object_file(snap)
    assert sp.emulator.dataplane.reflink is False
    assert sf.stat().st_size == GiB
    assert sf.stat().st_blocks * 512 < 8 * MiB  # only the written range was copied
    with open(sf, "rb") as fh:
        fh.seek(512 * MiB)
        copied = fh.read(4 * MiB)
    with open(f, "rb") as fh:
        fh.seek(512 * MiB)
        assert copied == fh.read(4 * MiB)


@pytest.mark.root
def test_stop_releases_every_loop_device_and_restart_restores_them(xfs_dir: Path, tmp_path: Path) -> None:
    data = xfs_dir / f"restart-{os.getpid()}-{tmp_path.name}"
    dev_root = tmp_path / "dev"
    try:
        with run_emulator(data, dev_root) as sp:
            api = sp.api()
            gid = api.volumeCreate({"name": "vol-p", "size": 32 * MiB, "template": "ssd"}).globalId
            dev = _attach(sp, "vol-p", 1)
            payload = os.urandom(MiB)
            _write(dev, 0, payload)
        losetup = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=True).stdout
        assert str(data) not in losetup
        assert not os.path.lexists(dev)
        with run_emulator(data, dev_root) as sp:
            assert [(a.volume, a.client) for a in sp.api().attachmentsList()] == [("vol-p", 1)]
            dev = sp.device_path(1, gid)
            assert os.readlink(dev).startswith("/dev/loop")
            with open(dev, "rb") as fh:
                assert fh.read(MiB) == payload
    finally:
        subprocess.run(["rm", "-rf", str(data)], check=False)
