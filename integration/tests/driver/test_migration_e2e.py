"""Migration end to end: the simulator says whether the VM runs; data, tags and iops survive;
an image from another storage is copied in by a real agent with qemu-img."""

from __future__ import annotations

import pytest

from cloudstack_storpool.driver import migration, naming, volumes
from cloudstack_storpool.driver.templates import TemplateSource
from integration.stack import LocalStack, new_uuid

pytestmark = [pytest.mark.root, pytest.mark.slow]

MiB = 1 << 20


def test_running_in_place_then_stopped_by_clone(stack: LocalStack) -> None:
    model = stack.cs.model
    src, dst = stack.pool_id("storpool-primary"), stack.pool_id("storpool-hybrid")
    host = next(iter(model.hosts))
    vm = model.add_vm(f"mig-{new_uuid()[:6]}", state="Running", host_id=host, tags={"vc-policy": "weekly"})
    vid = new_uuid()
    info = volumes.create(stack.ctx, src, vid, 32 * MiB, iops=321)
    model.add_volume("data", 32 * MiB, vm_id=vm.id, volume_id=vid, storage_id=src, path=info.path)
    volumes.attached(stack.ctx, src, vid, vm_id=vm.id, device_id=1)
    stack.sp.write_object(info.global_id, 5 * MiB, b"survives migration")

    live = migration.migrate(stack.ctx, vid, source_pool=src, target_pool=dst, path=info.path)
    assert live.mode == migration.IN_PLACE and live.volume.path == info.path
    v = stack.sp.api().volumeList(info.name)[0]
    assert (v.templateName, v.iops, v.tags["pool"], v.tags["vc-policy"]) == ("hybrid", 321, dst, "weekly")

    model.stop_vm(vm.id)
    back = migration.migrate(stack.ctx, vid, source_pool=dst, target_pool=src, path=live.volume.path)
    assert back.mode == migration.CLONE and back.volume.path != info.path
    assert back.volume.name == naming.volume(vid)
    v = stack.sp.api().volumeList(naming.volume(vid))[0]
    assert (v.templateName, v.iops, v.tags["pool"], v.tags["cvm"], v.tags["disk"]) == ("ssd", 321, src, vm.id, "1")
    assert stack.sp.read_object(back.volume.global_id, 5 * MiB, 18) == b"survives migration"
    assert not [o for o in stack.sp.model.objects.values() if o.name == naming.migrating(vid)]


def test_import_from_another_storage_copies_with_qemu_img(stack: LocalStack) -> None:
    dst = stack.pool_id("storpool-primary")
    image_id = new_uuid()
    image = stack.template_image(image_id, 24 * MiB, {0: b"nfs volume", 20 * MiB: b"tail"})
    src = stack.source_of(image)
    vid = new_uuid()
    res = migration.import_volume(stack.ctx, dst, vid, src, size=24 * MiB)
    assert res.mode == migration.COPY
    assert stack.sp.read_object(res.volume.global_id, 0, 10) == b"nfs volume"
    assert stack.sp.read_object(res.volume.global_id, 20 * MiB, 4) == b"tail"
    jobs = [j.command for j in stack.agent_jobs()]
    assert jobs == ["copy_to_volume"]

    # A broken image: the agent refuses, the half-made volume is deleted again.
    bad = TemplateSource(str(stack.secondary), "volumes/missing.qcow2", "qcow2")
    before = set(stack.sp.model.objects)
    with pytest.raises(Exception, match="does not exist"):
        migration.import_volume(stack.ctx, dst, new_uuid(), bad, size=24 * MiB)
    assert set(stack.sp.model.objects) == before
