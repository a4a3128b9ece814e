"""VM snapshots: one group snapshot, revert of every disk, delete, idempotency."""

from __future__ import annotations

import pytest

from cloudstack_storpool.driver import naming, pools, tags, vmsnapshots
from cloudstack_storpool.errors import Conflict, NotFound, ValidationError
from cloudstack_storpool.spconn import Ref
from tests.driver_harness import Env, MiB, new_uuid


def live(env: Env) -> list[str]:
    """Snapshots not deleted (StorPool keeps a deleted one while a volume still descends from it)."""
    return [s.name for s in env.conn.snapshots() if not s.deleted]


def vm_with_disks(env: Env, n: int = 3, *, running: bool = True) -> tuple[str, list[tuple[str, str]]]:
    """A VM whose every disk (ROOT included) is a StorPool volume; returns (vm id, [(uuid, ref)])."""
    m = env.cs.model
    host = next(iter(m.hosts.values())).id
    vm = m.add_vm(f"vm-{new_uuid()[:6]}", host_id=host, state="Running" if running else "Stopped",
                  storage_id=env.pool.uuid, tags={"vc-policy": "p1"})
    for vol in [v for v in m.volumes.values() if v.vm_id == vm.id]:
        m.delete_volume(vol.id)
    disks = []
    for i in range(n):
        disks.append(env.volume(vm_id=vm.id, device_id=i, max_iops=100 * (i + 1),
                                extra_tags={"cvm": vm.id, "disk": str(i), "vc_policy": "p1"}))
    return vm.id, disks


def test_take_is_one_group_call_with_tags(env: Env) -> None:
    vm, disks = vm_with_disks(env)
    sid = new_uuid()
    before = dict(env.sp.calls)
    info = vmsnapshots.take_vm_snapshot(env.ctx, vm_uuid=vm, vm_snapshot_uuid=sid)
    sent = {k: v - before.get(k, 0) for k, v in env.sp.calls.items() if v != before.get(k, 0)}
    assert sent == {"VolumesGroupSnapshot": 1}
    assert [m.volume_uuid for m in info.members] == [d for d, _ in disks]
    for member, (duuid, _) in zip(info.members, disks, strict=True):
        snap = env.conn.snapshot(member.snapshot)
        assert member.snapshot == naming.vm_snapshot_member(sid, duuid)
        assert snap.global_id == member.global_id
        assert snap.tags == {tags.UUID: sid, tags.KIND: tags.GROUP, tags.VM: vm, tags.POOL: env.pool.uuid}
    # The pool knows it holds them, so it cannot be removed while they exist.
    held = {o.global_id for o in pools.contents(env.ctx, env.pool).objects if o.kind == "snapshot"}
    assert {m.global_id for m in info.members} <= held


def test_take_twice_and_lost_response_make_one_group(env: Env) -> None:
    vm, _ = vm_with_disks(env, 2)
    sid = new_uuid()
    first = vmsnapshots.take_vm_snapshot(env.ctx, vm_uuid=vm, vm_snapshot_uuid=sid)
    again = vmsnapshots.take_vm_snapshot(env.ctx, vm_uuid=vm, vm_snapshot_uuid=sid)
    assert again.recovered and again.members == first.members
    sid2 = new_uuid()
    env.sp.faults.drop_after_apply("VolumesGroupSnapshot")
    lost = vmsnapshots.take_vm_snapshot(env.ctx, vm_uuid=vm, vm_snapshot_uuid=sid2)
    assert all(m.global_id for m in lost.members)
    assert len(env.conn.find_snapshots({tags.UUID: sid2})) == 2
    assert len(live(env)) == 4


def test_refused_with_memory_or_a_disk_elsewhere(env: Env) -> None:
    vm, _ = vm_with_disks(env, 1)
    with pytest.raises(ValidationError) as err:
        vmsnapshots.take_vm_snapshot(env.ctx, vm_uuid=vm, vm_snapshot_uuid=new_uuid(), memory=True)
    assert err.value.field == "memory"
    other = env.cs.model.add_storage_pool("nfs-pool", provider="DefaultPrimary")
    env.cs.model.add_volume("nfs-disk", 8 * MiB, vm_id=vm, storage_id=other.id, path="x")
    with pytest.raises(ValidationError, match="not on StorPool"):
        vmsnapshots.take_vm_snapshot(env.ctx, vm_uuid=vm, vm_snapshot_uuid=new_uuid())
    assert live(env) == []


def test_revert_restores_every_disk_and_keeps_tags_iops(env: Env) -> None:
    vm, disks = vm_with_disks(env)
    for i, (_, ref) in enumerate(disks):
        env.write(ref, 0, f"disk{i}-old".encode())
    sid = new_uuid()
    vmsnapshots.take_vm_snapshot(env.ctx, vm_uuid=vm, vm_snapshot_uuid=sid)
    for i, (_, ref) in enumerate(disks):
        env.write(ref, 0, f"disk{i}-NEW".encode())
    with pytest.raises(Conflict, match="Running"):
        vmsnapshots.revert_vm_snapshot(env.ctx, vm_uuid=vm, vm_snapshot_uuid=sid)
    assert env.read(disks[0][1], 0, 9) == b"disk0-NEW"
    env.cs.model.stop_vm(vm)
    res = vmsnapshots.revert_vm_snapshot(env.ctx, vm_uuid=vm, vm_snapshot_uuid=sid)
    assert res.volumes == [d for d, _ in disks]
    for i, (_, ref) in enumerate(disks):
        assert env.read(ref, 0, 9) == f"disk{i}-old".encode()
        vol = env.conn.volume(ref)
        assert vol.iops == 100 * (i + 1)
        assert (vol.tags["cvm"], vol.tags["disk"], vol.tags["vc-policy"]) == (vm, str(i), "p1")


def test_revert_with_a_member_missing_touches_nothing(env: Env) -> None:
    vm, disks = vm_with_disks(env, 2, running=False)
    sid = new_uuid()
    vmsnapshots.take_vm_snapshot(env.ctx, vm_uuid=vm, vm_snapshot_uuid=sid)
    env.write(disks[0][1], 0, b"changed")
    env.conn.snapshot_delete(naming.vm_snapshot_member(sid, disks[1][0]))
    with pytest.raises(NotFound):
        vmsnapshots.revert_vm_snapshot(env.ctx, vm_uuid=vm, vm_snapshot_uuid=sid)
    assert env.read(disks[0][1], 0, 7) == b"changed"


def test_delete_removes_every_member_even_without_the_vm(env: Env) -> None:
    vm, disks = vm_with_disks(env, 3)
    sid = new_uuid()
    vmsnapshots.take_vm_snapshot(env.ctx, vm_uuid=vm, vm_snapshot_uuid=sid)
    env.conn.attach(Ref("snapshot", naming.vm_snapshot_member(sid, disks[0][0])), 2, "ro")
    out = vmsnapshots.delete_vm_snapshot(env.ctx, vm_uuid=vm, vm_snapshot_uuid=sid)
    assert len(out.deleted) == 3 and live(env) == []
    assert vmsnapshots.delete_vm_snapshot(env.ctx, vm_uuid=vm, vm_snapshot_uuid=sid).deleted == []
    sid2 = new_uuid()
    vmsnapshots.take_vm_snapshot(env.ctx, vm_uuid=vm, vm_snapshot_uuid=sid2)
    env.cs.model.delete_vm(vm)
    for vol in [v for v in env.cs.model.volumes.values() if v.id in {d for d, _ in disks}]:
        env.cs.model.delete_volume(vol.id)
    out = vmsnapshots.delete_vm_snapshot(env.ctx, vm_uuid=vm, vm_snapshot_uuid=sid2)
    assert len(out.deleted) == 3 and live(env) == []
