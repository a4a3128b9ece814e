"""End to end on the local stack (emulator on reflink XFS, simulator, real agents, qemu-img):
snapshots with and without the secondary-storage bypass, volumes and templates from them."""

from __future__ import annotations

import hashlib
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from cloudstack_storpool.driver import naming, snapshots, templates, volumes
from cloudstack_storpool.driver.snapshots import SecondaryLocation
from integration.stack import LocalStack

MiB = 1 << 20
BYPASS = "sp.bypass.secondary.storage"


def new() -> str:
    return str(uuid.uuid4())


def pool_id(stack: LocalStack) -> str:
    return next(p.uuid for p in stack.pools().pools if p.name == "storpool-primary")


def make_volume(stack: LocalStack, size: int = 32 * MiB, *, vm_id: str | None = None,
                device_id: int | None = None) -> tuple[str, str]:
    """A volume made by Driver I and registered in CloudStack; returns (uuid, StorPool gid)."""
    vid = new()
    info = volumes.create(stack.ctx, pool_id(stack), vid, size)
    stack.cs.model.add_volume(f"vol-{vid[:6]}", size, vm_id=vm_id, device_id=device_id, storage_id=pool_id(stack),
                              path=info.path, volume_id=vid)
    return vid, info.global_id


def write(stack: LocalStack, gid: str, offset: int, data: bytes) -> None:
    with open(stack.sp.object_file(gid), "r+b") as f:
        f.seek(offset)
        f.write(data)


def read(stack: LocalStack, gid: str, offset: int, length: int) -> bytes:
    with open(stack.sp.object_file(gid), "rb") as f:
        f.seek(offset)
        return f.read(length)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def secondary_files(stack: LocalStack) -> set[str]:
    return {str(p.relative_to(stack.secondary)) for p in stack.secondary.rglob("*") if p.is_file()}


def agent_jobs(stack: LocalStack) -> int:
    return sum(len(a.server.jobs.list()) for a in stack.agents.values())


def set_bypass(stack: LocalStack, value: bool) -> None:
    """As an operator would: updateConfiguration through the CloudStack API (the simulator)."""
    stack.cloudstack.update_configuration(BYPASS, "true" if value else "false")


def qemu_img_compare(raw: Path, qcow2: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(raw), str(qcow2)],
                          capture_output=True, text=True, check=False)


def test_backup_equals_snapshot_and_bypass_writes_nothing(stack: LocalStack) -> None:
    vid, gid = make_volume(stack)
    write(stack, gid, 0, b"boot sector")
    write(stack, gid, 17 * MiB + 5, b"data in the middle")
    set_bypass(stack, False)
    time.sleep(stack.settings_ttl + 0.1)
    sid = new()
    where = SecondaryLocation(str(stack.secondary), f"snapshots/2/{vid}/{sid}.qcow2")
    info = snapshots.take_snapshot(stack.ctx, volume_uuid=vid, snapshot_uuid=sid, secondary=where)
    assert not info.bypassed and info.backup is not None
    backup = stack.secondary / where.path
    assert backup.is_file()
    assert subprocess.run(["qemu-img", "info", "--output=json", str(backup)], capture_output=True, text=True,
                          check=True).stdout.count('"format": "qcow2"') == 1
    res = qemu_img_compare(stack.sp.object_file(info.global_id), backup)
    assert res.returncode == 0, res.stdout + res.stderr
    write(stack, gid, 0, b"changed after")  # the volume moves on; the backup is the snapshot's
    assert qemu_img_compare(stack.sp.object_file(info.global_id), backup).returncode == 0
    assert qemu_img_compare(stack.sp.object_file(gid), backup).returncode == 1
    assert not [p for p in secondary_files(stack) if ".part-" in p]

    # Flip the setting through the CloudStack API: the next snapshot stays on StorPool only.
    set_bypass(stack, True)
    time.sleep(stack.settings_ttl + 0.1)
    before = secondary_files(stack)
    sid2 = new()
    info2 = snapshots.take_snapshot(stack.ctx, volume_uuid=vid, snapshot_uuid=sid2,
                                    secondary=SecondaryLocation(str(stack.secondary), f"snapshots/2/{vid}/{sid2}.qcow2"))
    assert info2.bypassed and info2.backup is None
    assert secondary_files(stack) == before
    assert stack.ctx.conn(pool_id(stack)).snapshot(naming.snapshot(sid2)) is not None

    # And back again, without restarting anything.
    set_bypass(stack, False)
    time.sleep(stack.settings_ttl + 0.1)
    sid3 = new()
    path3 = f"snapshots/2/{vid}/{sid3}.qcow2"
    assert not snapshots.take_snapshot(stack.ctx, volume_uuid=vid, snapshot_uuid=sid3,
                                       secondary=SecondaryLocation(str(stack.secondary), path3)).bypassed
    assert (stack.secondary / path3).is_file()


def test_volume_from_snapshot_no_copy_then_from_secondary(stack: LocalStack) -> None:
    vid, gid = make_volume(stack, 16 * MiB)
    write(stack, gid, 3 * MiB, b"the snapshot's content")
    sid = stack.cs.model.add_snapshot(vid).id
    set_bypass(stack, False)
    time.sleep(stack.settings_ttl + 0.1)
    where = SecondaryLocation(str(stack.secondary), f"snapshots/2/{vid}/{sid}.qcow2")
    snap = snapshots.take_snapshot(stack.ctx, volume_uuid=vid, snapshot_uuid=sid, secondary=where)
    write(stack, gid, 3 * MiB, b"overwritten afterwards")

    jobs = agent_jobs(stack)
    nid = new()
    out = snapshots.volume_from_snapshot(stack.ctx, pool=pool_id(stack), snapshot_uuid=sid, volume_uuid=nid,
                                         secondary=where)
    assert out.source == "storpool" and out.copied_bytes == 0
    assert agent_jobs(stack) == jobs  # no agent job at all
    assert read(stack, out.global_id, 3 * MiB, 22) == b"the snapshot's content"
    assert digest(stack.sp.object_file(out.global_id)) == digest(stack.sp.object_file(snap.global_id))

    # The StorPool snapshot is deleted out of band (and the first volume with it): the same
    # request now restores from the secondary copy.
    conn = stack.ctx.conn(pool_id(stack))
    conn.volume_delete(naming.volume(nid))
    conn.snapshot_delete(naming.snapshot(sid))
    assert conn.snapshot(naming.snapshot(sid)) is None
    again = snapshots.volume_from_snapshot(stack.ctx, pool=pool_id(stack), snapshot_uuid=sid, volume_uuid=nid,
                                           secondary=where)
    assert again.source == "secondary" and again.copied_bytes == 16 * MiB
    assert agent_jobs(stack) == jobs + 1
    assert read(stack, again.global_id, 3 * MiB, 22) == b"the snapshot's content"
    assert qemu_img_compare(stack.sp.object_file(again.global_id), stack.secondary / where.path).returncode == 0
    assert conn.attachments() == []


def test_template_from_snapshot_no_copy_on_storpool_and_qcow2_on_secondary(stack: LocalStack) -> None:
    vid, gid = make_volume(stack, 16 * MiB)
    write(stack, gid, 0, b"template bits")
    set_bypass(stack, True)
    time.sleep(stack.settings_ttl + 0.1)
    sid = new()
    snapshots.take_snapshot(stack.ctx, volume_uuid=vid, snapshot_uuid=sid)
    tid = new()
    path = f"template/tmpl/2/{tid}/{tid}.qcow2"
    out = snapshots.template_from_snapshot(stack.ctx, pool=pool_id(stack), template_uuid=tid, snapshot_uuid=sid,
                                           secondary=SecondaryLocation(str(stack.secondary), path))
    assert out.secondary is not None and out.size == 16 * MiB
    assert qemu_img_compare(stack.sp.object_file(out.global_id), stack.secondary / path).returncode == 0
    cached = templates.cached(stack.ctx, pool_id(stack), tid)
    assert cached is not None and cached.global_id == out.global_id
    # A root volume from this template is one VolumeCreate with the cache as parent: no fill.
    stack.cs.model.add_template("from-snap", 16 * MiB, template_id=tid)
    calls = dict(stack.ctx.api_calls())
    root = volumes.create_from_template(stack.ctx, pool_id(stack), new(), tid)
    sent = {k: v - calls.get(k, 0) for k, v in stack.ctx.api_calls().items() if v != calls.get(k, 0)}
    assert sent == {"VolumeCreate": 1}
    assert read(stack, root.global_id, 0, 13) == b"template bits"


@pytest.mark.parametrize("bypass", [True, False])
def test_encrypted_needs_bypass(stack: LocalStack, bypass: bool) -> None:
    vid, _ = make_volume(stack)
    set_bypass(stack, bypass)
    time.sleep(stack.settings_ttl + 0.1)
    where = SecondaryLocation(str(stack.secondary), f"snapshots/{vid}.qcow2")
    if bypass:
        assert snapshots.take_snapshot(stack.ctx, volume_uuid=vid, snapshot_uuid=new(), secondary=where,
                                       encrypted=True).bypassed
    else:
        with pytest.raises(Exception, match="encrypted"):
            snapshots.take_snapshot(stack.ctx, volume_uuid=vid, snapshot_uuid=new(), secondary=where, encrypted=True)
        assert secondary_files(stack) == set()
