"""A cloud the Java plugin built (`integration/tests/javabuilt.py`: StorPoolUtil's request
bodies through the official bindings), operated through CloudStack's API with the real `cs`
client and checked through the bindings: templates, snapshots, pool removal, deleted volumes."""

from __future__ import annotations

import json
import time
from typing import Any

import cs
import pytest
from click.testing import CliRunner

from cloudstack_storpool import names
from cloudstack_storpool.cli import cli
from cloudstack_storpool.driver import gc, pools, recovery, templates, volumes
from cloudstack_storpool.errors import Conflict, NotFound, ValidationError
from cloudstack_storpool.poolconfig import load_pools
from integration.stack import LocalStack, new_uuid
from integration.tests import javabuilt
from integration.tests.javabuilt import JavaBuilt


@pytest.fixture
def built(stack: LocalStack) -> JavaBuilt:
    """Built before the service starts (`cloud`), as a takeover finds the cloud."""
    return javabuilt.build(stack)


def _snapshot(sp: Any, path: str) -> Any | None:
    """The live StorPool snapshot at a CloudStack path (None: gone or being deleted)."""
    name = names.path_to_name(path)
    found = [s for s in sp.snapshotsList() if name in (s.name, "~" + s.globalId)]
    return found[0] if found and not getattr(found[0], "deleted", False) else None


def _volume(sp: Any, path: str) -> Any | None:
    name = names.path_to_name(path)
    return next((v for v in sp.volumesList() if name in (v.name, "~" + v.globalId)), None)


def _read(stack: LocalStack, path: str, n: int) -> bytes:
    return stack.sp.read_object(names.path_to_name(path), 0, n)


def test_the_fixture_is_what_storpoolutil_sends(built: JavaBuilt, sp: Any) -> None:
    """Every object anonymous and without a `pool` tag; the backup tagged `cs=delayDelete` only."""
    assert all(body is None or body.get("name", "") == "" for q, body in built.wire
               if q.startswith(("VolumeCreate", "VolumeSnapshot")) and "snap-" not in str(body))
    objs = [*sp.volumesList(), *sp.snapshotsList()]
    mine = [o for o in objs if o.templateName == javabuilt.TEMPLATE]
    assert mine and not any("pool" in (o.tags or {}) for o in mine)
    backup = [s for s in sp.snapshotsList() if (s.tags or {}).get("cs") == "delayDelete"]
    assert len(backup) == 1 and dict(backup[0].tags) == {"cs": "delayDelete"}
    assert backup[0].onVolume == names.path_to_name(built.deleted_volume_path)
    checks = [v for v in sp.volumesList() if (v.tags or {}).get("cs") == "check-volume-is-on-host"]
    assert [names.BYID_PREFIX + v.globalId for v in checks] == built.check_volumes and checks[0].size == 512


def test_delete_template_drops_exactly_the_pools_cache(stack: LocalStack, built: JavaBuilt, cloud: cs.CloudStack,
                                                       sp: Any) -> None:
    """deleteTemplate of a template the Java plugin made from a volume: the pool's cache (its
    template_spool_ref) goes, the snapshot the template is kept as stays."""
    cache = built.paths[built.volume_template]
    assert _snapshot(sp, cache) is not None and _snapshot(sp, built.volume_template_snapshot) is not None
    cloud.deleteTemplate(id=built.volume_template)
    assert _snapshot(sp, cache) is None
    assert _snapshot(sp, built.volume_template_snapshot) is not None
    # The other template's cache is untouched.
    assert _snapshot(sp, built.paths[built.cached_template]) is not None


def test_drop_without_a_path_takes_the_cache_not_the_kept_template(stack: LocalStack, built: JavaBuilt,
                                                                   sp: Any) -> None:
    assert templates.drop(stack.ctx, built.pool_id, built.volume_template)
    assert _snapshot(sp, built.paths[built.volume_template]) is None
    assert _snapshot(sp, built.volume_template_snapshot) is not None
    # A path that is not this template's cache is refused, and nothing is deleted.
    with pytest.raises(ValidationError) as refused:
        templates.drop(stack.ctx, built.pool_id, built.cached_template, path=built.volume_template_snapshot)
    assert refused.value.field == "path"
    assert _snapshot(sp, built.volume_template_snapshot) is not None


def test_snapshot_operations_take_the_path_cloudstack_kept(stack: LocalStack, built: JavaBuilt,
                                                            cloud: cs.CloudStack, sp: Any) -> None:
    """createVolume from a snapshot with no uuid tag (the plugin's first versions: named,
    `/dev/storpool/<name>`): found by the path in snapshot_details, cloned, no copy."""
    zone = stack.zone_id
    legacy = cloud.createVolume(name="from-legacy", zoneid=zone, snapshotid=built.legacy_snapshot)["volume"]
    assert _read(stack, legacy["path"], len(javabuilt.LEGACY_MARK)) == javabuilt.LEGACY_MARK
    clone = _volume(sp, legacy["path"])
    assert clone is not None and clone.parentName == names.path_to_name(built.paths[built.legacy_snapshot])
    tagged = cloud.createVolume(name="from-snap", zoneid=zone, snapshotid=built.snapshot)["volume"]
    assert _read(stack, tagged["path"], len(javabuilt.SNAPSHOT_MARK)) == javabuilt.SNAPSHOT_MARK
    # Deleting the legacy snapshot deletes that StorPool snapshot (found by its path).
    cloud.deleteVolume(id=legacy["id"])
    cloud.deleteSnapshot(id=built.legacy_snapshot)
    assert _snapshot(sp, built.paths[built.legacy_snapshot]) is None


def test_pool_removal_does_what_delete_data_store_does(stack: LocalStack, built: JavaBuilt, cloud: cs.CloudStack,
                                                       sp: Any) -> None:
    """Refused while a CloudStack snapshot is on the pool (nothing changes); once only template
    caches, the check volume and a delay-delete backup are left, the caches and the check
    volume are deleted and the pool goes; the backup is left to expire."""
    cloud.destroyVirtualMachine(id=built.vm_id, expunge=True)
    cloud.deleteVolume(id=built.data_volume)
    cloud.deleteTemplate(id=built.volume_template)
    with pytest.raises(cs.CloudStackApiException) as refused:
        cloud.deleteStoragePool(id=built.pool_id)
    assert "snapshot" in refused.value.error["errortext"]
    assert all(_volume(sp, p) is not None for p in built.check_volumes)
    assert _snapshot(sp, built.paths[built.cached_template]) is not None

    cloud.deleteSnapshot(id=built.snapshot)
    cloud.deleteSnapshot(id=built.legacy_snapshot)
    gc.run(stack.ctx)  # the template made from the volume is deleted in CloudStack: its snapshot goes
    assert cloud.deleteStoragePool(id=built.pool_id)["success"] is True
    assert all(_volume(sp, p) is None for p in built.check_volumes)
    assert _snapshot(sp, built.paths[built.cached_template]) is None
    assert any((s.tags or {}).get("cs") == "delayDelete" for s in sp.snapshotsList())
    assert built.pool_id not in [p.uuid for p in load_pools(stack.pools_file).pools]


def test_a_template_kept_as_a_storpool_snapshot_refuses_removal(stack: LocalStack, built: JavaBuilt) -> None:
    plan = pools.removal_plan(stack.ctx, stack.ctx.pool(built.pool_id))
    blocking = {names.BYID_PREFIX + o.global_id for o in plan.blocking}
    assert built.volume_template_snapshot in blocking
    assert {names.BYID_PREFIX + o.global_id for o in plan.caches} == {
        built.paths[built.cached_template], built.paths[built.volume_template]}
    assert [names.BYID_PREFIX + o.global_id for o in plan.check_volumes] == built.check_volumes


def test_a_java_backup_is_listed_with_its_path_and_restored_by_uuid(stack: LocalStack, built: JavaBuilt,
                                                                    sp: Any) -> None:
    listed = [d for d in recovery.deleted(stack.ctx, built.pool_id) if d.volume_path == built.deleted_volume_path]
    assert len(listed) == 1 and listed[0].uuid is None and listed[0].not_restorable is None
    with pytest.raises(NotFound, match="path"):
        recovery.restore(stack.ctx, built.pool_id, built.deleted_volume)
    back = recovery.restore(stack.ctx, built.pool_id, built.deleted_volume, path=built.deleted_volume_path)
    assert back.uuid == built.deleted_volume
    assert _read(stack, back.path, len(javabuilt.DELETED_MARK)) == javabuilt.DELETED_MARK

    # Restored: the backup is still there, but `volume restore` cannot bring it back again.
    again = [d for d in recovery.deleted(stack.ctx, built.pool_id) if d.volume_path == built.deleted_volume_path]
    assert again[0].not_restorable == f"restored already as volume {built.deleted_volume}"
    with pytest.raises(Conflict):
        recovery.restore(stack.ctx, built.pool_id, built.deleted_volume, path=built.deleted_volume_path)


def test_a_backup_of_a_volume_that_is_live_again_says_why_not(stack: LocalStack, built: JavaBuilt) -> None:
    """The project's own delay-delete, then a volume of the same uuid made again: listed with why
    `volume restore` cannot bring it back."""
    stack.settings.set("storpool.delete.after.interval", 3600, pool=built.pool_id)
    time.sleep(stack.settings_ttl + 0.1)  # the driver's settings cache
    vid = new_uuid()
    volumes.create(stack.ctx, built.pool_id, vid, 1 << 20)
    assert volumes.delete(stack.ctx, built.pool_id, vid).backup
    mine = [d for d in recovery.deleted(stack.ctx, built.pool_id) if d.uuid == vid]
    assert len(mine) == 1 and mine[0].not_restorable is None
    volumes.create(stack.ctx, built.pool_id, vid, 1 << 20)
    mine = [d for d in recovery.deleted(stack.ctx, built.pool_id) if d.uuid == vid]
    assert mine[0].not_restorable is not None and "exists" in mine[0].not_restorable


def test_the_operator_restores_a_java_backup_with_the_cli(stack: LocalStack, built: JavaBuilt) -> None:
    """`volume deleted` shows the Java backup's volume path; `volume restore --path` brings it back."""
    runner, env = CliRunner(), stack.driver_env()
    res = runner.invoke(cli, ["volume", "deleted", javabuilt.POOL_NAME, "--json"], env=env)
    assert res.exit_code == 0, res.output
    rows = [r for r in json.loads(res.output) if r["volume_path"] == built.deleted_volume_path]
    assert len(rows) == 1 and rows[0]["uuid"] is None and rows[0]["not_restorable"] is None
    res = runner.invoke(cli, ["volume", "restore", javabuilt.POOL_NAME, built.deleted_volume, "--path",
                              built.deleted_volume_path, "--json"], env=env)
    assert res.exit_code == 0, res.output
    assert _read(stack, json.loads(res.output)["path"], len(javabuilt.DELETED_MARK)) == javabuilt.DELETED_MARK
    res = runner.invoke(cli, ["volume", "deleted", javabuilt.POOL_NAME], env=env)
    assert res.exit_code == 0 and "restored already" in res.output, res.output
