"""Several StorPool clusters: two emulator clusters in one multi-cluster location, behind the one
endpoint of the pool. `sp.cluster.id` of each CloudStack cluster (StorPool's SP_CLUSTER_ID, as the
Java host listener records it) says which StorPool cluster its volumes are made in: the driver maps
it to the cluster name `RemoteCommand/` takes through ClustersList. Empty, root-from-template and
from-snapshot creates; `sp.cluster.endpoint` sending a cluster's calls to its own API (in the
Java plugin's form); `sp.cluster.location` as the Java plugin fills it; bad values refused naming
the setting. Real bindings against the emulators, real `cs` client against the
simulator, real agents and qemu-img for the template copies."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from cloudstack_storpool.driver import extract, identity, snapshots, templates, volumes
from cloudstack_storpool.driver.secondary import SecondaryLocation
from cloudstack_storpool.errors import SpUnreachable, ValidationError
from integration.stack import STACK_TEMPLATES, LocalStack, new_uuid
from integration.storpool_sim.testing import EmulatorHandle, run_emulator

pytestmark = pytest.mark.root

MiB = 1 << 20
TEMPLATE_SIZE = 16 * MiB
CONTENT = {0: b"boot sector", 9 * MiB: b"east or west"}


@dataclass
class Clusters:
    east: EmulatorHandle
    west_id: str
    """The stack's CloudStack cluster, on the stack's StorPool cluster ("sim", SP_CLUSTER_ID lab.b)."""
    east_id: str
    """A second CloudStack cluster whose hosts are clients of "east" (lab.e)."""


@pytest.fixture
def clusters(stack: LocalStack) -> Iterator[Clusters]:
    with run_emulator(stack.root / "east-data", stack.root / "east-dev", token=stack.sp.token, use_loop=False,
                      templates=STACK_TEMPLATES, clients=(4,), cluster_name="east", cluster_id="e") as east:
        stack.sp.emulator.join(east.emulator)
        model = stack.cs.model
        west = next(iter(model.clusters.values()))
        east_cluster = model.add_cluster("east-kvm", stack.zone_id)
        stack.add_kvm_host("east-kvm-1", east_cluster.id, 4, sp=east)
        # As the Java host listener records them: each cluster's SP_CLUSTER_ID.
        stack.cloudstack.update_configuration("sp.cluster.id", stack.sp.emulator.cluster_key, cluster_id=west.id)
        stack.cloudstack.update_configuration("sp.cluster.id", east.emulator.cluster_key, cluster_id=east_cluster.id)
        yield Clusters(east, west.id, east_cluster.id)


def _on(stack: LocalStack, c: Clusters, global_id: str) -> str:
    """Which StorPool cluster holds an object."""
    inside = [name for name, emu in (("west", stack.sp), ("east", c.east)) if global_id in emu.model.objects]
    assert len(inside) == 1, inside
    return inside[0]


def test_empty_volumes_land_on_their_clusters_storpool_cluster(stack: LocalStack, clusters: Clusters) -> None:
    pool = stack.pool_id()
    west = volumes.create(stack.ctx, pool, new_uuid(), 8 * MiB, cluster_id=clusters.west_id)
    east = volumes.create(stack.ctx, pool, new_uuid(), 8 * MiB, cluster_id=clusters.east_id)
    assert _on(stack, clusters, west.global_id) == "west" and _on(stack, clusters, east.global_id) == "east"
    assert clusters.east.calls["ClustersList"] == 0 and stack.sp.calls["ClustersList"] == 1  # once per connection

    # Everything after the create goes through the pool's endpoint and reaches the right cluster.
    got = identity.get(stack.ctx, pool, path=east.path)
    assert got.size == 8 * MiB and got.name == east.name and got.tags["uuid"] == east.uuid
    assert volumes.delete(stack.ctx, pool, str(east.uuid), path=east.path).deleted
    assert east.global_id not in clusters.east.model.objects
    assert identity.get(stack.ctx, pool, path=west.path).global_id == west.global_id


def test_root_volumes_and_template_caches_land_on_their_clusters_storpool_cluster(
    stack: LocalStack, clusters: Clusters,
) -> None:
    pool = stack.pool_id()
    tpl = stack.cs.model.add_template(f"multi-{new_uuid()[:6]}", TEMPLATE_SIZE)
    source = stack.source_of(stack.template_image(tpl.id, TEMPLATE_SIZE, CONTENT))
    east_agent = next(a for a in stack.agents.values() if a.client_id == 4)

    roots = {}
    for where, cs_cluster in (("west", clusters.west_id), ("east", clusters.east_id), ("east2", clusters.east_id)):
        roots[where] = volumes.create_from_template(stack.ctx, pool, new_uuid(), tpl.id, source=source,
                                                    cluster_id=cs_cluster)
    assert _on(stack, clusters, roots["west"].global_id) == "west"
    assert _on(stack, clusters, roots["east"].global_id) == "east"
    assert _on(stack, clusters, roots["east2"].global_id) == "east"

    # One cache per StorPool cluster, each root a clone of the cache in its own cluster; the east
    # fill was copied by the east host's agent, once.
    spec = stack.ctx.pool(pool)
    west_cache = templates.cache_name(tpl.id, spec)
    east_cache = west_cache + "." + clusters.east.emulator.cluster_key
    assert stack.sp.model.by_name.get(west_cache) and clusters.east.model.by_name.get(east_cache)
    for where, emu, cache in (("west", stack.sp, west_cache), ("east", clusters.east, east_cache),
                              ("east2", clusters.east, east_cache)):
        assert emu.model.objects[roots[where].global_id].parent == emu.model.by_name[cache]
    assert len(stack.agent_jobs("copy_template")) == 2
    assert len([j for j in east_agent.server.jobs.list() if j.command == "copy_template"]) == 1
    assert not [o for emu in (stack.sp, clusters.east) for o in emu.model.objects.values()
                if o.tags.get("cs") == "temporary"]

    # The east cache holds the template's data, copied in on the east side.
    east_gid = clusters.east.model.by_name[east_cache]
    with open(clusters.east.object_file(east_gid), "rb") as f:
        f.seek(9 * MiB)
        assert f.read(len(CONTENT[9 * MiB])) == CONTENT[9 * MiB]

    # Deleting the template drops the caches in both clusters.
    assert templates.drop(stack.ctx, pool, tpl.id)
    assert west_cache not in stack.sp.model.by_name and east_cache not in clusters.east.model.by_name


def test_snapshots_backups_and_volumes_from_snapshots_stay_in_their_clusters_storpool_cluster(
    stack: LocalStack, clusters: Clusters,
) -> None:
    pool = stack.pool_id()
    stack.set_bypass(False, wait=True)  # each backup is made by a host that sees the snapshot's cluster
    made = {}
    for where, cs_cluster in (("west", clusters.west_id), ("east", clusters.east_id)) * 2:
        vid, sid = new_uuid(), new_uuid()
        vol = volumes.create(stack.ctx, pool, vid, 8 * MiB, cluster_id=cs_cluster)
        stack.cs.model.add_volume(f"vol-{vid[:6]}", 8 * MiB, storage_id=pool, path=vol.path, volume_id=vid)
        backup = SecondaryLocation(str(stack.secondary), f"snapshots/{vid}/{sid}.qcow2")
        snap = snapshots.take_snapshot(stack.ctx, volume_uuid=vid, snapshot_uuid=sid, secondary=backup)
        assert snap.backup is not None and (stack.secondary / backup.path).is_file()
        copy = extract.extract_volume(stack.ctx, volume_uuid=vid, store=str(stack.secondary), path=f"volumes/{vid}.qcow2")
        assert (stack.secondary / copy.path).is_file()
        assert _on(stack, clusters, snap.global_id) == where
        made[where] = snapshots.volume_from_snapshot(stack.ctx, pool=pool, snapshot_uuid=snap.uuid,
                                                     volume_uuid=new_uuid(), path=snap.path, cluster_id=cs_cluster)
        assert made[where].path == "/dev/storpool-byid/" + made[where].global_id
    assert _on(stack, clusters, made["west"].global_id) == "west"
    assert _on(stack, clusters, made["east"].global_id) == "east"
    east = clusters.east.model.objects[made["east"].global_id]
    assert clusters.east.model.objects[east.parent].gid == east.parent  # a clone of the east snapshot


def test_cluster_endpoint_takes_that_clusters_calls(stack: LocalStack, clusters: Clusters) -> None:
    """With `sp.cluster.endpoint` (read as the Java plugin reads it: address, then token, the
    pool's template), creates for that cluster go to its own API: they go on while the pool URL's
    endpoint is down. A SP_TEMPLATE after the two items is not read."""
    pool = stack.pool_id()
    host, port = clusters.east.emulator.add_endpoint()
    stack.cloudstack.update_configuration(
        "sp.cluster.endpoint", f"SP_API_HTTP={host}:{port};SP_AUTH_TOKEN={stack.sp.token};SP_TEMPLATE=hdd",
        cluster_id=clusters.east_id)
    stack.sp.emulator.stop_listening()

    east = volumes.create(stack.ctx, pool, new_uuid(), 8 * MiB, cluster_id=clusters.east_id)
    obj = clusters.east.model.objects[east.global_id]
    assert obj.template == stack.ctx.pools.get(pool).template != "hdd"
    assert clusters.east.calls["ClustersList"] == 0  # no RemoteCommand needed: that API's own cluster
    with pytest.raises(SpUnreachable):
        volumes.create(stack.ctx, pool, new_uuid(), 8 * MiB, cluster_id=clusters.west_id)


def test_sp_cluster_location_holds_a_location_name_and_does_not_route(stack: LocalStack, clusters: Clusters) -> None:
    """What the Java host listener writes into `sp.cluster.location` (a `storpool location list`
    name, StorPoolHelper.setLocationIfNeeded) is accepted and changes no create's cluster."""
    pool = stack.pool_id()
    stack.cloudstack.update_configuration("sp.cluster.location", "lab", storage_id=pool)
    made = {where: volumes.create(stack.ctx, pool, new_uuid(), 8 * MiB, cluster_id=cs_id)
            for where, cs_id in (("west", clusters.west_id), ("east", clusters.east_id))}
    assert {where: _on(stack, clusters, v.global_id) for where, v in made.items()} == {"west": "west", "east": "east"}


@pytest.mark.parametrize(("setting", "value"), [
    ("sp.cluster.id", "east"),  # a cluster name is not an SP_CLUSTER_ID
    ("sp.cluster.endpoint", "east-api:81"),
    ("sp.cluster.endpoint", "SP_API_HTTP=east-api:eighty-one;SP_AUTH_TOKEN=east-token"),
    ("sp.cluster.endpoint", "SP_AUTH_TOKEN=east-token;SP_API_HTTP=east-api:81"),  # Java reads by position
    ("sp.cluster.endpoint", "storpool://east-token@east-api:81/ssd"),  # not a form Java reads here
])
def test_bad_values_are_refused_naming_the_setting(stack: LocalStack, clusters: Clusters, setting: str,
                                                   value: str) -> None:
    pool = stack.pool_id()
    stack.cloudstack.update_configuration(setting, value, cluster_id=clusters.east_id)
    before = sum(emu.calls["VolumeCreate"] for emu in (stack.sp, clusters.east))
    with pytest.raises(ValidationError) as err:
        volumes.create(stack.ctx, pool, new_uuid(), 8 * MiB, cluster_id=clusters.east_id)
    assert err.value.field.startswith(setting)
    assert sum(emu.calls["VolumeCreate"] for emu in (stack.sp, clusters.east)) == before  # nothing was sent
