"""Offerings -> template, `qc` and iops (real emulator, in-memory CloudStack)."""

from __future__ import annotations

import pytest

from cloudstack_storpool.driver import offerings
from cloudstack_storpool.driver.offerings import Placement
from cloudstack_storpool.errors import ValidationError
from tests.driver_harness import Env


def test_no_offering_uses_the_pool_template(env: Env) -> None:
    p = offerings.resolve(env.ctx, env.pool)
    assert p == Placement("ssd")
    assert p.create_args() == {"template": "ssd"}


def test_qos_class_wins_over_sp_template(env: Env) -> None:
    do = env.add_disk_offering(details={"SP_QOSCLASS": "gold", "SP_TEMPLATE": "nvme"})
    p = offerings.resolve(env.ctx, env.pool, disk_offering_id=do.id)
    assert (p.template, p.qos_class) == ("ssd", "gold")
    assert p.tags() == {"qc": "gold"}


def test_disk_offering_template_then_service_offering_for_root(env: Env) -> None:
    do = env.add_disk_offering(details={"SP_TEMPLATE": "nvme"})
    so = env.add_service_offering(details={"SP_TEMPLATE": "hybrid"})
    assert offerings.resolve(env.ctx, env.pool, disk_offering_id=do.id, service_offering_id=so.id,
                             volume_type="ROOT").template == "nvme"
    assert offerings.resolve(env.ctx, env.pool, service_offering_id=so.id, volume_type="ROOT").template == "hybrid"
    # The service offering only applies to ROOT disks.
    assert offerings.resolve(env.ctx, env.pool, service_offering_id=so.id, volume_type="DATADISK").template == "ssd"


def test_template_list_first_fit(env: Env) -> None:
    do = env.add_disk_offering(details={"SP_TEMPLATE": "no-such-template, nvme ,hybrid"})
    before = env.calls().get("VolumeTemplatesStatus", 0)
    p = offerings.resolve(env.ctx, env.pool, disk_offering_id=do.id, size=1 << 30)
    assert p.template == "nvme"
    assert p.candidates == ("no-such-template", "nvme", "hybrid")
    assert env.calls()["VolumeTemplatesStatus"] == before + 1
    # Nothing has room for an exabyte: the first existing template is returned and StorPool decides.
    assert offerings.resolve(env.ctx, env.pool, disk_offering_id=do.id, size=1 << 60).template == "nvme"


def test_single_template_costs_no_storpool_call(env: Env) -> None:
    do = env.add_disk_offering(details={"SP_TEMPLATE": "nvme"})
    resolved = offerings.resolve(env.ctx, env.pool, disk_offering_id=do.id)
    assert env.calls() == {}
    assert resolved.template == "nvme"


def test_iops_precedence(env: Env) -> None:
    do = env.add_disk_offering(max_iops=500)
    so = env.add_service_offering(max_iops=1000)
    assert offerings.resolve(env.ctx, env.pool, disk_offering_id=do.id).iops == 500
    assert offerings.resolve(env.ctx, env.pool, disk_offering_id=do.id, custom_iops=42).iops == 42
    assert offerings.resolve(env.ctx, env.pool, service_offering_id=so.id, volume_type="ROOT").iops == 1000
    assert offerings.resolve(env.ctx, env.pool, service_offering_id=so.id).iops is None
    assert offerings.resolve(env.ctx, env.pool, custom_iops=0).iops is None


@pytest.mark.parametrize(
    ("details", "field"),
    [
        ({"SP_TEMPLATE": "ssd r3"}, "disk_offering.SP_TEMPLATE"),
        ({"SP_TEMPLATE": "ssd,,hdd"}, "disk_offering.SP_TEMPLATE"),
        ({"SP_QOSCLASS": "gold tier"}, "disk_offering.SP_QOSCLASS.qc"),
    ],
)
def test_bad_offering_details_name_the_field(env: Env, details: dict[str, str], field: str) -> None:
    do = env.add_disk_offering(details=details)
    with pytest.raises(ValidationError) as exc:
        offerings.resolve(env.ctx, env.pool, disk_offering_id=do.id)
    assert exc.value.field == field


def test_bad_arguments(env: Env) -> None:
    with pytest.raises(ValidationError) as exc:
        offerings.resolve(env.ctx, env.pool, disk_offering_id="nope")
    assert exc.value.field == "disk_offering_id"
    with pytest.raises(ValidationError) as exc:
        offerings.resolve(env.ctx, env.pool, custom_iops=-1)
    assert exc.value.field == "iops"
    with pytest.raises(ValidationError) as exc:
        offerings.resolve(env.ctx, env.pool, volume_type="SWAP")
    assert exc.value.field == "volume_type"


def test_explicit_iops_on_update(env: Env) -> None:
    assert offerings.explicit_iops(env.ctx, env.pool, Placement("ssd", iops=300)) == 300
    assert offerings.explicit_iops(env.ctx, env.pool, Placement("ssd")) == 0
    assert offerings.explicit_iops(env.ctx, env.pool, Placement("limited")) == 777
