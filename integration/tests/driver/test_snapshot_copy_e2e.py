"""copy_snapshot and release_exports against two linked StorPool locations (the stack's second
zone): refusals naming the field before anything changes, every failure undone, a retry that
finds the copy, and exports released only when the copy is complete and the plugin's."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudstack_storpool.driver import snapshotcopy, snapshots, volumes
from cloudstack_storpool.errors import NotFound, StorPoolError, ValidationError
from integration.needs import need_tool
from integration.stack import ZONE2_LOCATION, ZONE2_POOL, LocalStack, new_uuid

pytestmark = pytest.mark.root

MiB = 1 << 20


@pytest.fixture
def stack(xfs_dir: Path) -> Iterator[LocalStack]:
    need_tool("qemu-img")
    root = xfs_dir / f"stack-{uuid.uuid4().hex[:10]}"
    try:
        with LocalStack(root, make_xfs=False, second_zone=True) as s:
            s.set_bypass(True)
            yield s
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _snapshot(stack: LocalStack) -> tuple[str, str, str]:
    """A snapshot on the first zone's pool; returns (snapshot uuid, its path, its global id)."""
    vid = new_uuid()
    vol = volumes.create(stack.ctx, stack.pool_id(), vid, 8 * MiB)
    stack.cs.model.add_volume("v", 8 * MiB, storage_id=stack.pool_id(), path=vol.path, volume_id=vid)
    stack.sp.write_object(vol.global_id, 0, b"first location")
    sid = new_uuid()
    snap = snapshots.take_snapshot(stack.ctx, volume_uuid=vid, snapshot_uuid=sid)
    return sid, snap.path, snap.global_id


def _copy(stack: LocalStack, sid: str, path: str) -> snapshotcopy.SnapshotCopied:
    return snapshotcopy.copy_snapshot(stack.ctx, snapshot_uuid=sid, source_pool=stack.pool_id(),
                                      pool=stack.pool_id(ZONE2_POOL), path=path)


def test_copy_keeps_global_id_and_data_and_a_retry_finishes_it(stack: LocalStack) -> None:
    assert stack.sp2 is not None
    sid, path, gid = _snapshot(stack)
    before_a, before_b = dict(stack.sp.calls), dict(stack.sp2.calls)
    done = _copy(stack, sid, path)
    spent = {f"{side}:{q}": n - before.get(q, 0) for side, emu, before in (("a", stack.sp, before_a),
                                                                          ("b", stack.sp2, before_b))
             for q, n in emu.calls.items() if n != before.get(q, 0)}
    # Export, copy and reconcile (the Java plugin adds a SnapshotUpdate for the snapshot's cluster),
    # plus one lookup of the source and two of the copy.
    assert spent == {"a:Snapshot": 1, "a:SnapshotExport": 1, "b:Snapshot": 2, "b:SnapshotFromRemote": 1,
                     "b:SnapshotReconcile": 1}
    assert (done.path, done.global_id, done.location, done.source_location, done.recovered) == (
        path, gid, ZONE2_LOCATION, "lab-location", False)
    assert stack.sp2.read_object(gid, 0, 14) == b"first location"
    calls = dict(stack.sp2.calls)
    again = _copy(stack, sid, path)
    assert again.recovered and again.path == path
    assert stack.sp2.calls["SnapshotFromRemote"] == calls["SnapshotFromRemote"], "not copied twice"


def test_refusals_name_the_field_and_change_nothing(stack: LocalStack) -> None:
    sid, path, _gid = _snapshot(stack)
    with pytest.raises(ValidationError) as own:
        snapshotcopy.copy_snapshot(stack.ctx, snapshot_uuid=sid, source_pool=stack.pool_id(), pool=stack.pool_id(),
                                   path=path)
    assert own.value.field == "pool"
    with pytest.raises(ValidationError) as same_location:
        snapshotcopy.copy_snapshot(stack.ctx, snapshot_uuid=sid, source_pool=stack.pool_id(),
                                   pool=stack.pool_id("storpool-hybrid"), path=path)
    assert same_location.value.field == "pool" and "location" in str(same_location.value)
    with pytest.raises(ValidationError) as bad_uuid:
        snapshotcopy.copy_snapshot(stack.ctx, snapshot_uuid="nope", source_pool=stack.pool_id(),
                                   pool=stack.pool_id(ZONE2_POOL), path=path)
    assert bad_uuid.value.field == "snapshot_uuid"
    with pytest.raises(NotFound):
        _copy(stack, new_uuid(), None)  # type: ignore[arg-type]
    stack.cs.model.set_configuration("sp.cluster.location", "", "storagepool", stack.pool_id(ZONE2_POOL))
    stack.settings.invalidate()
    with pytest.raises(ValidationError) as unknown:
        _copy(stack, sid, path)
    assert unknown.value.field == "pool" and "sp.cluster.location" in str(unknown.value)
    assert stack.sp.api().exportsList()["exports"] == []
    assert stack.sp2 is not None and stack.sp2.calls["SnapshotFromRemote"] == 0


def test_failed_copy_revokes_the_export(stack: LocalStack) -> None:
    assert stack.sp2 is not None
    sid, path, gid = _snapshot(stack)
    stack.sp2.faults.fail_next("SnapshotFromRemote", error="insufficientResources")
    with pytest.raises(StorPoolError) as failed:
        _copy(stack, sid, path)
    assert "export" in str(failed.value) and "revoked" in str(failed.value)
    assert stack.sp.api().exportsList()["exports"] == []
    assert not any(str(s.globalId) == gid for s in stack.sp2.api().snapshotsList())


def test_failed_reconcile_deletes_the_copy_and_revokes_the_export(stack: LocalStack) -> None:
    assert stack.sp2 is not None
    sid, path, gid = _snapshot(stack)
    stack.sp2.faults.fail_next("SnapshotReconcile", error="invalidParam")
    with pytest.raises(StorPoolError):
        _copy(stack, sid, path)
    assert stack.sp.api().exportsList()["exports"] == []
    assert not any(str(s.globalId) == gid for s in stack.sp2.api().snapshotsList())
    assert _copy(stack, sid, path).global_id == gid  # and it can be copied again


def test_exports_released_only_when_the_copy_is_complete_and_ours(stack: LocalStack) -> None:
    assert stack.sp2 is not None
    sid, path, gid = _snapshot(stack)
    stack.sp2.model.transfer_seconds = 3600
    done = _copy(stack, sid, path)
    assert done.recovering
    assert snapshotcopy.release_exports(stack.ctx) == [], "the copy is still arriving"
    # An operator's own export (no copy of ours there) is left alone.
    api = stack.sp.api()
    api.volumeCreate({"name": "backup-src", "size": 8 * MiB, "template": "ssd"})
    other = str(api.snapshotCreate("backup-src", {"name": "backup"}).snapshotGlobalId)
    api.snapshotExport({"snapshot": "backup", "location": ZONE2_LOCATION})
    stack.sp2.model.transfer_seconds = 0
    stack.sp2.model.lookup(f"~{gid}", "snapshot").recovering_until = None
    released = snapshotcopy.release_exports(stack.ctx)
    assert [(r.global_id, r.location) for r in released] == [(gid, ZONE2_LOCATION)]
    assert [e.globalId for e in api.exportsList()["exports"]] == [other]
    snapshots.delete_snapshot(stack.ctx, pool=stack.pool_id(), snapshot_uuid=sid, path=path)


def test_delete_of_a_copied_snapshot_releases_its_export_once_the_copy_is_complete(stack: LocalStack) -> None:
    """StorPool refuses to delete an exported snapshot: the delete revokes the export when the
    copy is complete, and reports the location while it is still arriving (nothing deleted)."""
    assert stack.sp2 is not None
    sid, path, gid = _snapshot(stack)
    stack.sp2.model.transfer_seconds = 3600
    _copy(stack, sid, path)
    with pytest.raises(StorPoolError) as busy:
        snapshots.delete_snapshot(stack.ctx, pool=stack.pool_id(), snapshot_uuid=sid, path=path)
    assert busy.value.name == "busy" and ZONE2_LOCATION in str(busy.value)
    assert stack.sp.model.lookup(f"~{gid}", "snapshot") is not None
    stack.sp2.model.lookup(f"~{gid}", "snapshot").recovering_until = None
    assert snapshots.delete_snapshot(stack.ctx, pool=stack.pool_id(), snapshot_uuid=sid, path=path).existed
    assert stack.sp.api().exportsList()["exports"] == []
    assert stack.sp2.read_object(gid, 0, 14) == b"first location", "the copy stays in its location"


def test_the_services_export_task_runs_on_its_setting_and_is_counted(stack: LocalStack) -> None:
    """`snapshot-exports` among the service's periodic tasks: its interval is
    storpool.snapshot.recovery.from.remote.check (CloudStack's key), a cycle releases a
    complete copy's export, and each run shows in cssp_periodic_runs_total."""
    from cloudstack_storpool import metrics
    from cloudstack_storpool.driver.recovery import ExpiryTracker
    from cloudstack_storpool.driver.stats import StatsCache
    from cloudstack_storpool.service.periodic import service_tasks

    task = next(t for t in service_tasks(stack.ctx, StatsCache(), ExpiryTracker(), metrics.record_result)
                if t.name == "snapshot-exports")
    assert task.setting == snapshotcopy.RECOVERY_SETTING and task._interval() == 300.0
    stack.cs.model.set_configuration(snapshotcopy.RECOVERY_SETTING, "7")
    stack.settings.invalidate()
    assert task._interval() == 7.0
    sid, path, gid = _snapshot(stack)
    _copy(stack, sid, path)

    def runs(outcome: str) -> float:
        return metrics.REGISTRY.get_sample_value("cssp_periodic_runs_total",
                                                 {"task": "snapshot-exports", "outcome": outcome}) or 0.0

    before = runs("ok")
    released = task.once()
    assert [r.global_id for r in released] == [gid]
    assert runs("ok") == before + 1
