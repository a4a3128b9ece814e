"""Several StorPool clusters: two emulator clusters in one multi-cluster location, behind the one
endpoint of the pool. `sp.cluster.id` of each CloudStack cluster says which StorPool cluster its
volumes are made in; afterwards every call by `~globalId` reaches the cluster holding the object.
Real bindings against the emulators, real `cs` client against the simulator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cloudstack_storpool.driver import identity, volumes
from integration.stack import STACK_TEMPLATES, LocalStack, new_uuid
from integration.storpool_sim.testing import EmulatorHandle, run_emulator

MiB = 1 << 20


@pytest.fixture
def east(stack: LocalStack) -> Iterator[EmulatorHandle]:
    """A second cluster ("east", global ids `lab.e.*`) joined to the stack's ("sim", `lab.b.*`)."""
    with run_emulator(stack.root / "east-data", stack.root / "east-dev", token=stack.sp.token, use_loop=False,
                      templates=STACK_TEMPLATES, cluster_name="east", cluster_id="e") as handle:
        stack.sp.emulator.join(handle.emulator)
        yield handle


def test_volumes_of_two_cloudstack_clusters_land_on_their_own_storpool_cluster(
    stack: LocalStack, east: EmulatorHandle,
) -> None:
    model = stack.cs.model
    west_cluster = next(iter(model.clusters.values()))
    east_cluster = model.add_cluster("east-kvm", stack.zone_id)
    stack.cloudstack.update_configuration("sp.cluster.id", "east", cluster_id=east_cluster.id)
    pool = stack.pool_id()

    here = volumes.create(stack.ctx, pool, new_uuid(), 8 * MiB, cluster_id=west_cluster.id)  # sp.cluster.id unset
    there = volumes.create(stack.ctx, pool, new_uuid(), 8 * MiB, cluster_id=east_cluster.id)
    assert here.global_id.startswith("lab.b.") and there.global_id.startswith("lab.e.")
    assert there.global_id in east.model.objects and there.global_id not in stack.sp.model.objects
    assert here.global_id in stack.sp.model.objects and here.global_id not in east.model.objects
    assert east.calls["VolumeCreate"] == 1 and stack.sp.calls["VolumeCreate"] == 1

    # Everything after the create goes through the same endpoint and reaches the right cluster.
    got = identity.get(stack.ctx, pool, path=there.path)
    assert got.size == 8 * MiB and got.name == there.name and got.tags["uuid"] == there.uuid
    assert volumes.delete(stack.ctx, pool, str(there.uuid), path=there.path).deleted
    assert there.global_id not in east.model.objects
    assert identity.get(stack.ctx, pool, path=here.path).global_id == here.global_id
