"""Pool and volume statistics against the emulator: stored bytes match what was written (the
emulator reads them off its reflinked data files), one StorPool call per cluster per collection,
and `pool stats` agrees with `pool describe`."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from cloudstack_storpool.cli import cli
from cloudstack_storpool.driver import identity, pools, stats, volumes
from cloudstack_storpool.errors import ValidationError
from integration.stack import LocalStack, new_uuid

pytestmark = [pytest.mark.root, pytest.mark.slow]

MiB = 1 << 20
BLOCK = 4096


def _calls_of(stack: LocalStack, fn: object) -> dict[str, int]:
    before = dict(stack.sp.calls)
    fn()  # type: ignore[operator]
    return {q: n - before.get(q, 0) for q, n in stack.sp.calls.items() if n != before.get(q, 0)}


def test_stored_bytes_follow_the_data_written_and_collections_cost_one_call(stack: LocalStack) -> None:
    ctx = stack.ctx
    a, b, clone = new_uuid(), new_uuid(), new_uuid()
    va = volumes.create(ctx, "storpool-primary", a, 64 * MiB, iops=500)
    vb = volumes.create(ctx, "storpool-hybrid", b, 32 * MiB)
    stack.sp.write_object(va.global_id, 0, os.urandom(4 * MiB))
    stack.sp.write_object(va.global_id, 32 * MiB, os.urandom(BLOCK))
    stack.sp.write_object(vb.global_id, 8 * MiB, os.urandom(MiB))
    stack.cs.model.add_volume("stats-a", 64 * MiB, storage_id=stack.pool_id(), path=va.path, volume_id=a)
    snap = new_uuid()
    # A clone of A's snapshot stores only what is written to it afterwards.
    taken = ctx.conn("storpool-primary").snapshot_create(va.name, tags={"uuid": snap, "cs": "snapshot"})
    made = ctx.conn("storpool-primary").volume_create(name=f"cs-vol-{clone}", parent=taken.ref, template="ssd",
                                                      tags=pools.identity_tags(clone, "volume", ctx.pool("storpool-primary")))
    stack.sp.write_object(made.global_id, 48 * MiB, os.urandom(512 * 1024))

    cache = stats.StatsCache()
    assert _calls_of(stack, lambda: cache.refresh(ctx, "volumes")) == {"VolumesSpace": 1}
    assert _calls_of(stack, lambda: cache.refresh(ctx, "capacity")) == {"VolumeTemplatesStatus": 1}
    # Served from the cache: no call at all.
    assert _calls_of(stack, lambda: stats.pool_stats(ctx, cache=cache)) == {}

    by_uuid = {r.uuid: r for r in stats.volume_stats(ctx, cache=cache)}
    assert by_uuid[a].stored == 0, "after the snapshot, A's data belongs to the snapshot"
    assert by_uuid[a].space_used == 4 * MiB + BLOCK
    assert by_uuid[a].allocated == 64 * MiB and by_uuid[a].iops == 500 and by_uuid[a].pool == stack.pool_id()
    assert by_uuid[b].stored == MiB and by_uuid[b].iops is None
    assert by_uuid[b].pool == stack.pool_id("storpool-hybrid")
    assert by_uuid[clone].stored == 512 * 1024
    assert by_uuid[clone].space_used == 4 * MiB + BLOCK + 512 * 1024
    assert [r.uuid for r in stats.volume_stats(ctx, volume_uuid=b)] == [b]
    with pytest.raises(ValidationError):  # one uuid spelling only (uuids.py)
        stats.volume_stats(ctx, volume_uuid=b.upper())

    rows = {r.name: r for r in stats.pool_stats(ctx, cache=cache)}
    primary, hybrid = rows["storpool-primary"], rows["storpool-hybrid"]
    assert primary.volumes == 2 and primary.provisioned == 128 * MiB and primary.stored == 512 * 1024
    assert hybrid.volumes == 1 and hybrid.stored == MiB
    for row in rows.values():
        assert row.total is not None and row.free is not None and row.used == row.total - row.free
        described = pools.describe(ctx, row.uuid)
        assert (described.capacity, described.free, described.volumes, described.used) == (
            row.total, row.free, row.volumes, row.stored)


def test_volumes_space_passes_the_bindings_types(stack: LocalStack) -> None:
    v = volumes.create(stack.ctx, "storpool-primary", new_uuid(), 8 * MiB)
    stack.sp.write_object(v.global_id, 0, b"x" * BLOCK)
    rows = stack.sp.strict_api().volumesSpace()
    mine = next(r for r in rows if r.globalId == v.global_id)
    assert mine.storedSize == BLOCK and mine.spaceUsed == BLOCK
    assert stack.sp.strict_api().volumesStatus()[v.name].storedSize == BLOCK
    stack.sp.strict_api().volumeTemplatesStatus()


def test_pool_and_volume_stats_commands(stack: LocalStack) -> None:
    vid = new_uuid()
    runner, env = CliRunner(), stack.driver_env()
    res = runner.invoke(cli, ["volume", "create", "storpool-primary", vid, "--size", "10G", "--json"], env=env)
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["size"] == 10 << 30
    v = identity.get(stack.ctx, "storpool-primary", volume_uuid=vid)
    stack.sp.write_object(v.global_id, 0, os.urandom(2 * MiB))
    res = runner.invoke(cli, ["volume", "stats", "storpool-primary"], env=env)
    assert res.exit_code == 0, res.output
    assert "10.0 GiB" in res.output and "2.0 MiB" in res.output
    res = runner.invoke(cli, ["volume", "stats", "--json", "--volume", vid], env=env)
    assert json.loads(res.output)[0]["stored"] == 2 * MiB
    res = runner.invoke(cli, ["pool", "stats", "--json"], env=env)
    assert res.exit_code == 0, res.output
    got = {r["name"]: r for r in json.loads(res.output)}
    assert got["storpool-primary"]["provisioned"] == 10 << 30 and got["storpool-primary"]["stored"] == 2 * MiB
    res = runner.invoke(cli, ["pool", "stats", "storpool-primary"], env=env)
    assert res.exit_code == 0 and "GiB" in res.output and "storpool-hybrid" not in res.output


def test_service_serves_from_its_cache_and_the_collectors_refresh_it(stack: LocalStack) -> None:
    import time

    import requests

    from cloudstack_storpool import metrics
    from cloudstack_storpool.driver.recovery import ExpiryTracker
    from cloudstack_storpool.service import counted
    from cloudstack_storpool.service.periodic import service_tasks

    vid = new_uuid()
    v = volumes.create(stack.ctx, "storpool-primary", vid, 8 * MiB)
    url = stack.start_service()
    auth = {"Authorization": f"Bearer {stack.service_token}"}
    first = _calls_of(stack, lambda: requests.get(f"{url}/v1/stats/pools", headers=auth, timeout=10).raise_for_status())
    assert first == {"VolumeTemplatesStatus": 1, "VolumesSpace": 1}, "nothing cached yet: one collection of each"
    stack.sp.write_object(v.global_id, 0, os.urandom(MiB))
    served: list[list[dict[str, object]]] = []
    assert _calls_of(stack, lambda: served.append(requests.get(
        f"{url}/v1/stats/volumes", params={"path": v.path}, headers=auth, timeout=10).json())) == {}
    assert [r["uuid"] for r in served[0]] == [vid]
    assert served[0][0]["stored"] == 0, "served from the cache, made before the write"

    # The collectors, on their settings' intervals (here: every 0.2 s), refresh what is served.
    cache = stats.StatsCache()
    counted.register()
    tasks = [t for t in service_tasks(stack.ctx, cache, ExpiryTracker(), metrics.record_result)
             if t.name in ("capacity", "volumes")]
    for t in tasks:
        t._interval = lambda: 0.2
        t.start()
    try:
        deadline = time.monotonic() + 10
        while min(cache.collections["capacity"], cache.collections["volumes"]) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        for t in tasks:
            t.close()
    assert min(cache.collections["capacity"], cache.collections["volumes"]) >= 2
    assert [r.stored for r in stats.volume_stats(stack.ctx, path=v.path, cache=cache)] == [MiB]
    scraped = requests.get(f"{url}/metrics", headers=auth, timeout=10).text
    gauge = {frozenset(smp.labels.items()): smp.value for fam in text_string_to_metric_families(scraped)
             for smp in fam.samples if smp.name == "cssp_pool_bytes"}
    assert gauge[frozenset({"pool": stack.pool_id(), "kind": "stored"}.items())] == MiB


def test_cache_is_bypassed_when_its_collector_is_off(stack: LocalStack) -> None:
    import time

    ctx = stack.ctx
    cache = stats.StatsCache()
    cache.refresh(ctx, "capacity")
    cache.refresh(ctx, "volumes")
    assert _calls_of(stack, lambda: stats.pool_stats(ctx, cache=cache)) == {}
    stack.settings.set("storpool.storage.stats.interval", 0)
    time.sleep(stack.settings_ttl + 0.1)
    assert _calls_of(stack, lambda: stats.pool_stats(ctx, cache=cache)) == {"VolumeTemplatesStatus": 1}
