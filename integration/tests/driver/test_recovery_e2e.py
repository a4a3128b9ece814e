"""Deleted volumes that come back: delete with `storpool.delete.after.interval` = 60, list it,
restore it with its content, and after StorPool's deleteAfter has run out it is gone and the
service's sync reports it."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from cloudstack_storpool.cli import cli
from cloudstack_storpool.driver import identity, recovery, volumes
from cloudstack_storpool.errors import Conflict, NotFound
from integration.stack import LocalStack, new_uuid

pytestmark = pytest.mark.slow

MiB = 1 << 20


def test_delete_list_restore_then_expiry_reported(stack: LocalStack) -> None:
    ctx, p = stack.ctx, stack.pool_id()
    vid, other = new_uuid(), new_uuid()
    info = volumes.create(ctx, p, vid, 16 * MiB, iops=300)
    volumes.create(ctx, p, other, 16 * MiB)
    stack.sp.write_object(info.global_id, 4096, b"precious data")
    stack.settings.set("storpool.delete.after.interval", 60, pool=p)
    time.sleep(stack.settings_ttl + 0.1)
    tracker = recovery.ExpiryTracker()
    assert tracker.sync(ctx).listed == []

    assert volumes.delete(ctx, p, vid, path=info.path).backup is not None
    listed = recovery.deleted(ctx, p)
    assert [d.uuid for d in listed] == [vid]
    assert listed[0].expires_at is not None and 55 <= listed[0].expires_at - time.time() <= 61
    assert recovery.deleted(ctx, "storpool-hybrid") == []

    runner, env = CliRunner(), stack.driver_env()
    res = runner.invoke(cli, ["volume", "deleted", "storpool-primary"], env=env)
    assert res.exit_code == 0 and vid in res.output and "16.0 MiB" in res.output, res.output

    with pytest.raises(NotFound):
        recovery.restore(ctx, p, other)  # never deleted: no backup
    before = dict(stack.sp.calls)
    back = recovery.restore(ctx, p, vid)
    assert {q: n - before.get(q, 0) for q, n in stack.sp.calls.items() if n != before.get(q, 0)} == {
        "SnapshotsList": 1, "VolumesList": 1, "VolumeCreate": 1}
    assert back.path != info.path and back.iops == 300 and back.size == 16 * MiB
    assert stack.sp.read_object(back.global_id, 4096, 13) == b"precious data"
    assert identity.get(ctx, p, volume_uuid=vid).global_id == back.global_id
    with pytest.raises(Conflict):
        recovery.restore(ctx, p, vid)  # it exists again

    # Deleted again; restored by the operator command this time.
    stack.sp.write_object(back.global_id, 0, b"second life")
    volumes.delete(ctx, p, vid)
    res = runner.invoke(cli, ["volume", "restore", "storpool-primary", vid, "--json"], env=env)
    assert res.exit_code == 0, res.output
    again = json.loads(res.output)
    assert stack.sp.read_object(again["global_id"], 0, 11) == b"second life"
    volumes.delete(ctx, p, vid)
    assert len(recovery.deleted(ctx, p)) >= 1
    assert len(tracker.sync(ctx).listed) >= 1

    # StorPool's deleteAfter runs out: the backups go, the sync reports them, nothing can come back.
    stack.sp.model.clock = lambda: time.time() + 120
    report = tracker.sync(ctx)
    assert report.listed == [] and {d.uuid for d in report.expired} == {vid}
    assert recovery.deleted(ctx) == []
    with pytest.raises(NotFound):
        recovery.restore(ctx, p, vid)


def test_service_sync_reports_expiry(stack: LocalStack) -> None:
    import requests

    ctx, p = stack.ctx, stack.pool_id()
    vid = new_uuid()
    volumes.create(ctx, p, vid, 8 * MiB)
    stack.settings.set("storpool.delete.after.interval", 60, pool=p)
    stack.settings.set("storpool.list.snapshots.delete.after.interval", 1)
    time.sleep(stack.settings_ttl + 0.1)
    volumes.delete(ctx, p, vid)
    url = stack.start_service()
    auth = {"Authorization": f"Bearer {stack.service_token}"}
    listed = requests.get(f"{url}/v1/deleted-volumes", params={"pool": p}, headers=auth, timeout=10).json()
    assert [d["uuid"] for d in listed] == [vid]
    time.sleep(1.5)  # one sync sees the backup
    stack.sp.model.clock = lambda: time.time() + 120
    deadline = time.monotonic() + 10
    expired: list[dict[str, object]] = []
    while not expired and time.monotonic() < deadline:
        time.sleep(0.3)
        expired = requests.get(f"{url}/v1/deleted-volumes/expired", headers=auth, timeout=10).json()
    assert [d["uuid"] for d in expired] == [vid]
    metrics = requests.get(f"{url}/metrics", headers=auth, timeout=10).text
    assert 'cssp_periodic_runs_total{outcome="ok",task="delay-delete"}' in metrics
