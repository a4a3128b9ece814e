"""Offerings end to end (CloudStack simulator's offerings, emulator): `qc` wins over
SP_TEMPLATE, iops follow the offering through create, change of offering and migration, and
an offering without IOPS clears the limit."""

from __future__ import annotations

import pytest

from cloudstack_storpool.driver import migration, naming, volumes
from integration.stack import LocalStack, new_uuid

pytestmark = [pytest.mark.root, pytest.mark.slow]

MiB = 1 << 20


def disk_offering(stack: LocalStack, name: str) -> str:
    return next(o.id for o in stack.cs.model.disk_offerings.values() if o.name == name)


def service_offering(stack: LocalStack, name: str) -> str:
    return next(o.id for o in stack.cs.model.service_offerings.values() if o.name == name)


def sp_volume(stack: LocalStack, vid: str) -> object:
    return stack.sp.api().volumeList(naming.volume(vid))[0]


def test_qos_class_wins_over_sp_template(stack: LocalStack) -> None:
    both = stack.cs.model.add_disk_offering("gold-and-nvme", disk_size_gb=1,
                                            details={"SP_QOSCLASS": "gold", "SP_TEMPLATE": "nvme"})
    vid = new_uuid()
    info = volumes.create(stack.ctx, stack.pool_id(), vid, 64 * MiB, disk_offering_id=both.id)
    v = sp_volume(stack, vid)
    assert (v.templateName, v.tags["qc"]) == ("ssd", "gold")  # type: ignore[attr-defined]
    assert info.qos_class == "gold"
    nvme = volumes.create(stack.ctx, stack.pool_id(), new_uuid(), 64 * MiB,
                          disk_offering_id=disk_offering(stack, "sp-nvme-template"))
    assert nvme.template == "nvme" and "qc" not in nvme.tags


def test_iops_follow_the_offering_through_create_change_and_migration(stack: LocalStack) -> None:
    vid = new_uuid()
    p = stack.pool_id()
    volumes.create(stack.ctx, p, vid, 64 * MiB, disk_offering_id=disk_offering(stack, "sp-iops-500"))
    assert sp_volume(stack, vid).iops == 500  # type: ignore[attr-defined]

    custom = volumes.change_offering(stack.ctx, p, vid, disk_offering_id=disk_offering(stack, "sp-custom-iops"),
                                     iops=750)
    assert custom.iops == 750 and sp_volume(stack, vid).iops == 750  # type: ignore[attr-defined]

    cleared = volumes.change_offering(stack.ctx, p, vid, disk_offering_id=disk_offering(stack, "sp-small"))
    assert cleared.iops is None and sp_volume(stack, vid).iops == "-"  # type: ignore[attr-defined]

    volumes.change_offering(stack.ctx, p, vid, disk_offering_id=disk_offering(stack, "sp-iops-500"))
    stack.cs.model.add_volume("data", 64 * MiB, volume_id=vid, storage_id=p)
    moved = migration.migrate(stack.ctx, vid, source_pool=p, target_pool=stack.pool_id("storpool-hybrid"),
                              disk_offering_id=disk_offering(stack, "sp-iops-500"))
    assert moved.mode == migration.CLONE  # detached volume: clone, delete, rename
    v = sp_volume(stack, vid)
    assert (v.iops, v.templateName) == (500, "hybrid")  # type: ignore[attr-defined]


def test_root_volume_iops_from_the_service_offering(stack: LocalStack) -> None:
    tpl = stack.cs.model.add_template(f"so-{new_uuid()[:6]}", 8 * MiB)
    image = stack.template_image(tpl.id, 8 * MiB, {0: b"root"})
    src = stack.source_of(image)
    vid = new_uuid()
    info = volumes.create_from_template(stack.ctx, stack.pool_id(), vid, tpl.id, source=src,
                                        service_offering_id=service_offering(stack, "medium-iops"))
    assert info.iops == 1000 and sp_volume(stack, vid).iops == 1000  # type: ignore[attr-defined]
    hybrid_root = volumes.create_from_template(stack.ctx, stack.pool_id(), new_uuid(), tpl.id, source=src,
                                               service_offering_id=service_offering(stack, "hybrid-root"))
    assert hybrid_root.template == "hybrid"
