"""Operations that find objects by their tags list each StorPool cluster once, whatever the
number of pools on it or of objects it holds (no per-item or per-pool full scans).
Both test pools share one emulator: one cluster."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cloudstack_storpool.driver import pools, templates, vmsnapshots, volumes
from integration.stack import new_uuid
from tests.driver_harness import Env

SRC = templates.TemplateSource("/secondary", "t.qcow2")


def sent(env: Env, operation: Callable[[], Any]) -> dict[str, int]:
    before = env.calls()
    operation()
    return {k: v - before.get(k, 0) for k, v in env.calls().items() if v != before.get(k, 0)}


def test_vm_bookkeeping_lists_the_cluster_once(env: Env) -> None:
    vm = env.add_vm(tags={"vc-policy": "gold"})
    mine = []
    for i in range(6):
        vid = new_uuid()
        volumes.create(env.ctx, env.pool if i % 2 else env.pool_b, vid, 1 << 20)
        if i < 3:
            volumes.attached(env.ctx, env.pool if i % 2 else env.pool_b, vid, vm_id=vm.id, device_id=i)
            mine.append(vid)
    env.cs.model.set_vm_tags(vm.id, {"vc-policy": "silver"})
    assert sent(env, lambda: volumes.vm_tags_changed(env.ctx, vm.id)) == {"VolumesList": 1, "VolumeUpdate": 3}
    assert sent(env, lambda: volumes.vm_destroyed(env.ctx, vm.id)) == {"VolumesList": 1, "VolumeUpdate": 3}


def test_pool_listings_list_each_kind_once(env: Env) -> None:
    for _ in range(3):
        templates.ensure_cached(env.ctx, env.pool, env.add_template().id, source=SRC)
        volumes.create(env.ctx, env.pool_b, new_uuid(), 1 << 20)
    assert sent(env, lambda: templates.list_cached(env.ctx, env.pool)) == {"SnapshotsList": 1}
    assert sent(env, lambda: pools.contents(env.ctx, env.pool_b)) == {"VolumesList": 1, "SnapshotsList": 1}


def test_deleting_a_vm_snapshot_of_a_gone_vm_lists_the_cluster_once(env: Env) -> None:
    key, vm_id = new_uuid(), new_uuid()
    conn = env.ctx.conn(env.pool)
    refs = [volumes.create(env.ctx, env.pool, new_uuid(), 1 << 20).name for _ in range(3)]
    conn.group_snapshot([(r, None) for r in refs], tags={"uuid": key, "cs": "group", "cvm": vm_id})
    calls = sent(env, lambda: vmsnapshots.delete_vm_snapshot(env.ctx, vm_uuid=vm_id, vm_snapshot_uuid=key))
    assert calls.get("SnapshotsList") == 1 and calls.get("VolumesList", 0) == 0
    assert calls.get("SnapshotDelete") == 3
