"""End to end on the local stack (emulator on reflink XFS, simulator, real agents, qemu-img):
snapshots with and without the secondary-storage bypass, volumes and templates from them."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from cloudstack_storpool.driver import naming, snapshots, templates, volumes
from cloudstack_storpool.driver.snapshots import SecondaryLocation
from integration.stack import LocalStack, new_uuid

pytestmark = pytest.mark.root

MiB = 1 << 20


def make_volume(stack: LocalStack, size: int = 32 * MiB, *, vm_id: str | None = None,
                device_id: int | None = None) -> tuple[str, str]:
    """A volume made by the driver (`volumes.create`) and registered in CloudStack; returns (uuid, StorPool gid)."""
    vid = new_uuid()
    info = volumes.create(stack.ctx, stack.pool_id(), vid, size)
    stack.cs.model.add_volume(f"vol-{vid[:6]}", size, vm_id=vm_id, device_id=device_id, storage_id=stack.pool_id(),
                              path=info.path, volume_id=vid)
    return vid, info.global_id


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def qemu_img_compare(raw: Path, qcow2: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(raw), str(qcow2)],
                          capture_output=True, text=True, check=False)


def test_backup_equals_snapshot_and_bypass_writes_nothing(stack: LocalStack) -> None:
    vid, gid = make_volume(stack)
    stack.sp.write_object(gid, 0, b"boot sector")
    stack.sp.write_object(gid, 17 * MiB + 5, b"data in the middle")
    stack.set_bypass(False, wait=True)
    sid = new_uuid()
    where = SecondaryLocation(str(stack.secondary), f"snapshots/2/{vid}/{sid}.qcow2")
    info = snapshots.take_snapshot(stack.ctx, volume_uuid=vid, snapshot_uuid=sid, secondary=where)
    assert not info.bypassed and info.backup is not None
    backup = stack.secondary / where.path
    assert backup.is_file()
    assert subprocess.run(["qemu-img", "info", "--output=json", str(backup)], capture_output=True, text=True,
                          check=True).stdout.count('"format": "qcow2"') == 1
    res = qemu_img_compare(stack.sp.object_file(info.global_id), backup)
    assert res.returncode == 0, res.stdout + res.stderr
    stack.sp.write_object(gid, 0, b"changed after")  # the volume moves on; the backup is the snapshot's
    assert qemu_img_compare(stack.sp.object_file(info.global_id), backup).returncode == 0
    assert qemu_img_compare(stack.sp.object_file(gid), backup).returncode == 1
    assert not [p for p in stack.secondary_files() if ".part-" in p]

    # Flip the setting through the CloudStack API: the next snapshot stays on StorPool only.
    stack.set_bypass(True, wait=True)
    before = stack.secondary_files()
    sid2 = new_uuid()
    info2 = snapshots.take_snapshot(stack.ctx, volume_uuid=vid, snapshot_uuid=sid2,
                                    secondary=SecondaryLocation(str(stack.secondary), f"snapshots/2/{vid}/{sid2}.qcow2"))
    assert info2.bypassed and info2.backup is None
    assert stack.secondary_files() == before
    assert stack.ctx.conn(stack.pool_id()).snapshot(naming.snapshot(sid2)) is not None

    # And back again, without restarting anything.
    stack.set_bypass(False, wait=True)
    sid3 = new_uuid()
    path3 = f"snapshots/2/{vid}/{sid3}.qcow2"
    assert not snapshots.take_snapshot(stack.ctx, volume_uuid=vid, snapshot_uuid=sid3,
                                       secondary=SecondaryLocation(str(stack.secondary), path3)).bypassed
    assert (stack.secondary / path3).is_file()


def test_volume_from_snapshot_no_copy_then_from_secondary(stack: LocalStack) -> None:
    vid, gid = make_volume(stack, 16 * MiB)
    stack.sp.write_object(gid, 3 * MiB, b"the snapshot's content")
    sid = stack.cs.model.add_snapshot(vid).id
    stack.set_bypass(False, wait=True)
    where = SecondaryLocation(str(stack.secondary), f"snapshots/2/{vid}/{sid}.qcow2")
    snap = snapshots.take_snapshot(stack.ctx, volume_uuid=vid, snapshot_uuid=sid, secondary=where)
    stack.sp.write_object(gid, 3 * MiB, b"overwritten afterwards")

    jobs = len(stack.agent_jobs())
    nid = new_uuid()
    out = snapshots.volume_from_snapshot(stack.ctx, pool=stack.pool_id(), snapshot_uuid=sid, volume_uuid=nid,
                                         secondary=where)
    assert out.source == "storpool" and out.copied_bytes == 0
    assert len(stack.agent_jobs()) == jobs  # no agent job at all
    assert stack.sp.read_object(out.global_id, 3 * MiB, 22) == b"the snapshot's content"
    assert digest(stack.sp.object_file(out.global_id)) == digest(stack.sp.object_file(snap.global_id))

    # The StorPool snapshot is deleted out of band (and the first volume with it): the same
    # request now restores from the secondary copy.
    conn = stack.ctx.conn(stack.pool_id())
    conn.volume_delete(naming.volume(nid))
    conn.snapshot_delete(naming.snapshot(sid))
    assert conn.snapshot(naming.snapshot(sid)) is None
    again = snapshots.volume_from_snapshot(stack.ctx, pool=stack.pool_id(), snapshot_uuid=sid, volume_uuid=nid,
                                           secondary=where)
    assert again.source == "secondary" and again.copied_bytes == 16 * MiB
    assert len(stack.agent_jobs()) == jobs + 1
    assert stack.sp.read_object(again.global_id, 3 * MiB, 22) == b"the snapshot's content"
    assert qemu_img_compare(stack.sp.object_file(again.global_id), stack.secondary / where.path).returncode == 0
    assert conn.attachments() == []


def test_template_from_snapshot_no_copy_on_storpool_and_qcow2_on_secondary(stack: LocalStack) -> None:
    vid, gid = make_volume(stack, 16 * MiB)
    stack.sp.write_object(gid, 0, b"template bits")
    stack.set_bypass(True, wait=True)
    sid = new_uuid()
    snapshots.take_snapshot(stack.ctx, volume_uuid=vid, snapshot_uuid=sid)
    tid = new_uuid()
    path = f"template/tmpl/2/{tid}/{tid}.qcow2"
    out = snapshots.template_from_snapshot(stack.ctx, pool=stack.pool_id(), template_uuid=tid, snapshot_uuid=sid,
                                           secondary=SecondaryLocation(str(stack.secondary), path))
    assert out.secondary is not None and out.size == 16 * MiB
    assert qemu_img_compare(stack.sp.object_file(out.global_id), stack.secondary / path).returncode == 0
    cached = templates.cached(stack.ctx, stack.pool_id(), tid)
    assert cached is not None and cached.global_id == out.global_id
    # A root volume from this template is one VolumeCreate with the cache as parent: no fill.
    stack.cs.model.add_template("from-snap", 16 * MiB, template_id=tid)
    calls = dict(stack.ctx.api_calls())
    root = volumes.create_from_template(stack.ctx, stack.pool_id(), new_uuid(), tid)
    sent = {k: v - calls.get(k, 0) for k, v in stack.ctx.api_calls().items() if v != calls.get(k, 0)}
    assert sent == {"VolumeCreate": 1}
    assert stack.sp.read_object(root.global_id, 0, 13) == b"template bits"


@pytest.mark.parametrize("bypass", [True, False])
def test_encrypted_needs_bypass(stack: LocalStack, bypass: bool) -> None:
    vid, _ = make_volume(stack)
    stack.set_bypass(bypass, wait=True)
    where = SecondaryLocation(str(stack.secondary), f"snapshots/{vid}.qcow2")
    if bypass:
        assert snapshots.take_snapshot(stack.ctx, volume_uuid=vid, snapshot_uuid=new_uuid(), secondary=where,
                                       encrypted=True).bypassed
    else:
        with pytest.raises(Exception, match="encrypted"):
            snapshots.take_snapshot(stack.ctx, volume_uuid=vid, snapshot_uuid=new_uuid(), secondary=where, encrypted=True)
        assert stack.secondary_files() == set()
