"""Volumes end to end: VM bookkeeping tags following the simulator's VMs, bad input refused with
nothing created, delete with a delay-delete backup set through CloudStack's configuration."""

from __future__ import annotations

import time

import pytest

from cloudstack_storpool.driver import naming, volumes
from cloudstack_storpool.errors import ValidationError
from integration.stack import LocalStack, new_uuid

pytestmark = [pytest.mark.root, pytest.mark.slow]

MiB = 1 << 20


def sp_tags(stack: LocalStack, vid: str) -> dict[str, str]:
    return dict(stack.sp.api().volumeList(naming.volume(vid))[0].tags)


def test_vm_tags_follow_attach_detach_tag_changes_and_destroy(stack: LocalStack) -> None:
    model = stack.cs.model
    p = stack.pool_id()
    vm = model.add_vm(f"tagged-{new_uuid()[:6]}", state="Running", host_id=next(iter(model.hosts)))
    data1, data2, later = new_uuid(), new_uuid(), new_uuid()
    for vid in (data1, data2, later):
        volumes.create(stack.ctx, p, vid, 16 * MiB)
    base = {"uuid", "cs", "pool"}

    volumes.attached(stack.ctx, p, data1, vm_id=vm.id, device_id=1)
    volumes.attached(stack.ctx, p, data2, vm_id=vm.id, device_id=2)
    assert sp_tags(stack, data1)["cvm"] == vm.id and sp_tags(stack, data1)["disk"] == "1"
    assert "vc-policy" not in sp_tags(stack, data1)

    model.set_vm_tag(vm.id, "vc-policy", "daily")
    assert sorted(volumes.vm_tags_changed(stack.ctx, vm.id)) == sorted([naming.volume(data1), naming.volume(data2)])
    assert sp_tags(stack, data2)["vc-policy"] == "daily"

    model.set_vm_tag(vm.id, "vc-policy", "hourly")
    volumes.vm_tags_changed(stack.ctx, vm.id)
    volumes.attached(stack.ctx, p, later, vm_id=vm.id, device_id=3)  # attached after the change
    assert {sp_tags(stack, v)["vc-policy"] for v in (data1, data2, later)} == {"hourly"}
    assert volumes.vm_tags_changed(stack.ctx, vm.id) == []  # nothing to change

    volumes.detached(stack.ctx, p, data2)
    assert set(sp_tags(stack, data2)) == base

    model.set_vm_tag(vm.id, "vc-policy", None)
    volumes.vm_tags_changed(stack.ctx, vm.id)
    assert "vc-policy" not in sp_tags(stack, data1)
    assert sp_tags(stack, data1)["cvm"] == vm.id

    model.delete_vm(vm.id)
    assert sorted(volumes.vm_destroyed(stack.ctx, vm.id)) == sorted([naming.volume(data1), naming.volume(later)])
    for vid in (data1, data2, later):
        assert set(sp_tags(stack, vid)) == base


def test_bad_input_is_refused_before_anything_is_created(stack: LocalStack) -> None:
    model = stack.cs.model
    p = stack.pool_id()
    tpl = model.add_template(f"bad-{new_uuid()[:6]}", 8 * MiB)
    image = stack.template_image(tpl.id, 8 * MiB, {0: b"x"})
    src = stack.source_of(image)
    bad_name = model.add_disk_offering("bad-template-name", details={"SP_TEMPLATE": "ssd/../hdd"})
    objects = set(stack.sp.model.objects)
    calls = dict(stack.sp.calls)
    cases = [
        (lambda: volumes.create(stack.ctx, p, new_uuid(), -512), "size"),
        (lambda: volumes.create(stack.ctx, p, new_uuid(), 1000), "size"),
        (lambda: volumes.create(stack.ctx, "no-such-pool", new_uuid(), 512), "pool"),
        (lambda: volumes.create(stack.ctx, p, new_uuid(), 512, disk_offering_id=bad_name.id), "disk_offering.SP_TEMPLATE"),
        (lambda: volumes.create_from_template(stack.ctx, p, new_uuid(), new_uuid(), source=src), "template_uuid"),
        (lambda: volumes.create_from_template(stack.ctx, p, new_uuid(), tpl.id, size=4 * MiB, source=src), "size"),
        (lambda: volumes.create_from_template(stack.ctx, p, new_uuid(), tpl.id, size=8 * MiB + 1, source=src), "size"),
        (lambda: volumes.create_from_template(stack.ctx, p, new_uuid(), tpl.id, source=src,
                                              disk_offering_id=bad_name.id), "disk_offering.SP_TEMPLATE"),
        (lambda: volumes.create(stack.ctx, p, "../etc", 512), "volume_uuid"),
    ]
    for call, field in cases:
        with pytest.raises(ValidationError) as exc:
            call()
        assert exc.value.field == field, (field, exc.value)
    assert set(stack.sp.model.objects) == objects
    assert stack.sp.calls.get("VolumeCreate", 0) == calls.get("VolumeCreate", 0)
    assert [j for a in stack.agents.values() for j in a.server.jobs.list()] == []


def test_delete_keeps_a_backup_when_configured_per_pool(stack: LocalStack) -> None:
    p = stack.pool_id()
    vid, plain = new_uuid(), new_uuid()
    info = volumes.create(stack.ctx, p, vid, 16 * MiB)
    volumes.create(stack.ctx, p, plain, 16 * MiB)
    stack.sp.write_object(info.global_id, 0, b"precious")
    stack.sp.api().volumesReassign([{"volume": info.name, "rw": [1]}])  # still attached somewhere

    res = volumes.delete(stack.ctx, p, plain)
    assert res.deleted and res.backup is None
    stack.settings.set("storpool.delete.after.interval", 3600, pool=p)
    time.sleep(stack.settings_ttl + 0.1)
    res = volumes.delete(stack.ctx, p, vid, path=info.path)
    assert res.deleted and res.backup is not None
    snap = stack.sp.api().snapshotList(res.backup)[0]
    assert snap.tags["cs"] == "delayDelete" and snap.tags["uuid"] == vid
    assert snap.targetDeleteDate > time.time() + 3000
    assert stack.sp.read_object(snap.globalId, 0, 8) == b"precious"
    assert stack.sp.model.by_name.get(info.name) is None
    # Deleting again is still a success.
    assert volumes.delete(stack.ctx, p, vid).deleted is False
