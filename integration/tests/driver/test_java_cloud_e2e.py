"""Taking over a cloud the Java plugin built (integration/javacloud.py), end to end: the real
bindings against the emulator, the real `cs` client against the simulator, real agents.

Every object here was made by replaying the Java plugin's own request bodies: anonymous, no
`pool` tag, known to CloudStack only by the paths it stored.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest

from cloudstack_storpool.driver import adopt, gc, hosts, pools, snapshots, templates, vmsnapshots, volumes
from cloudstack_storpool.driver.secondary import TemplateSource
from cloudstack_storpool.errors import ValidationError
from cloudstack_storpool.poolconfig import load_pools
from integration import javacloud
from integration.javacloud import JavaCloud
from integration.stack import LocalStack, new_uuid

MiB = 1 << 20


@pytest.fixture
def java(stack: LocalStack) -> Iterator[JavaCloud]:
    yield javacloud.build(stack)


def _read(stack: LocalStack, ref: str, n: int = 16) -> bytes:
    return stack.sp.read_object(ref, 0, n)


def _calls(stack: LocalStack, before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in stack.sp.calls.items() if v != before.get(k, 0)}


def test_java_snapshot_revert_clone_and_delete(stack: LocalStack, java: JavaCloud) -> None:
    conn = stack.ctx.conn(java.pool_id)
    data = java.ref(java.data_volume)
    snap_ref = java.ref(java.snapshot)
    assert _read(stack, data) == b"after--snapshots"

    # Revert by the snapshot's uuid alone: the project's name misses, the Java tags find it.
    res = snapshots.revert_snapshot(stack.ctx, volume_uuid=java.data_volume, snapshot_uuid=java.snapshot)
    assert res.snapshot == snap_ref and res.iops == 500
    assert _read(stack, data)[:15] == b"before-snapshot"
    vol = conn.volume(data)
    assert vol is not None and vol.iops == 500 and vol.tags["cvm"] == java.vm_id

    # Clone (volume from snapshot) by the path CloudStack stored: one VolumeCreate, no copy.
    before = dict(stack.sp.calls)
    clone_id = new_uuid()
    made = snapshots.volume_from_snapshot(stack.ctx, pool=java.pool_id, snapshot_uuid=java.snapshot,
                                          volume_uuid=clone_id, path=java.paths[java.snapshot])
    assert made.source == "storpool" and made.copied_bytes == 0
    assert _calls(stack, before) == {"VolumeCreate": 1}
    child = conn.volume(made.path.replace("/dev/storpool-byid/", "~"))
    assert child is not None and child.parent == snap_ref
    assert _read(stack, made.path.replace("/dev/storpool-byid/", "~"))[:15] == b"before-snapshot"

    # Delete by uuid: found by its tags and really deleted (it used to report success and stay).
    gone = snapshots.delete_snapshot(stack.ctx, pool=java.pool_id, snapshot_uuid=java.snapshot)
    assert gone.existed and gone.name == snap_ref
    left = conn.snapshot(snap_ref)
    assert left is None or left.deleted  # StorPool keeps a deleted snapshot while the clone needs it
    assert not snapshots.delete_snapshot(stack.ctx, pool=java.pool_id, snapshot_uuid=java.snapshot).existed


def test_java_vm_snapshot_revert_and_delete(stack: LocalStack, java: JavaCloud) -> None:
    conn = stack.ctx.conn(java.pool_id)
    data = java.ref(java.data_volume)
    res = vmsnapshots.revert_vm_snapshot(stack.ctx, vm_uuid=java.vm_id, vm_snapshot_uuid=java.vm_snapshot)
    assert sorted(res.volumes) == sorted([java.root_volume, java.data_volume])
    assert _read(stack, data)[:15] == b"before-snapshot"
    assert _read(stack, java.ref(java.root_volume), len(javacloud.TEMPLATE_MARK)) == javacloud.TEMPLATE_MARK
    members = [s for s in conn.snapshots() if s.tags.get("uuid") == java.vm_snapshot and not s.deleted]
    assert len(members) == 2

    deleted = vmsnapshots.delete_vm_snapshot(stack.ctx, vm_uuid=java.vm_id, vm_snapshot_uuid=java.vm_snapshot)
    assert sorted(deleted.deleted) == sorted(m.ref for m in members)
    assert not [s for s in conn.snapshots() if s.tags.get("uuid") == java.vm_snapshot and not s.deleted]


def test_root_volume_from_the_java_cache_copies_nothing_and_gc_collects_it(stack: LocalStack, java: JavaCloud) -> None:
    conn = stack.ctx.conn(java.pool_id)
    copies0 = len(stack.agent_jobs("copy_template"))
    vid = new_uuid()
    info = volumes.create_from_template(stack.ctx, java.pool_id, vid, java.template_id,
                                        source=TemplateSource(str(stack.secondary), "template/none.qcow2", "qcow2"))
    assert len(stack.agent_jobs("copy_template")) == copies0  # 0 copies: the Java cache is the cache
    made = conn.volume(info.path.replace("/dev/storpool-byid/", "~"))
    assert made is not None and made.parent == java.template_cache
    assert _read(stack, made.ref, len(javacloud.TEMPLATE_MARK)) == javacloud.TEMPLATE_MARK
    cached = templates.cached(stack.ctx, java.pool_id, java.template_id)
    assert cached is not None and cached.global_id == java.template_cache[1:]

    # The template is deleted in CloudStack: a real (not dry) GC removes the Java cache.
    stack.cs.model.delete_template(java.template_id, forced=True)
    report = gc.run(stack.ctx)
    assert java.template_cache in {"~" + a.global_id for a in report.planned if a.kind == gc.CACHED_TEMPLATE}
    left = conn.snapshot(java.template_cache)
    assert left is None or left.deleted


def test_pool_describe_contents_and_the_pools_file_see_the_java_objects(stack: LocalStack, java: JavaCloud) -> None:
    loaded = load_pools(stack.pools_file)
    spec = loaded.get(java.pool_id)
    assert spec.uuid == java.pool_id and spec.key == java.pool_id.split(";")[1]
    stack.sp.write_object(java.ref(java.data_volume)[1:], 0, b"j" * 65536)  # a guest's write on the Java volume
    info = pools.describe(stack.ctx, java.pool_id)
    assert info.volumes == 3  # root, data, and the orphan
    assert info.cached_templates == 1 and info.snapshots == 3  # the volume snapshot and two VM-snapshot members
    assert info.used is not None and info.used >= 65536  # stored bytes of the untagged Java volumes count
    held = pools.contents(stack.ctx, java.pool_id)
    assert {o.global_id for o in held.objects} >= {java.ref(java.root_volume)[1:], java.template_cache[1:]}
    # Objects of the project's own pools are not counted as the Java pool's, nor the reverse.
    assert pools.describe(stack.ctx, "storpool-primary").volumes == 0


def test_heartbeat_takes_the_client_ids_the_caller_has_from_host_parent(stack: LocalStack, java: JavaCloud) -> None:
    """The Java plugin's client ids live in `host.parent` only, which listHosts does not show:
    without them nothing can be checked; given by the caller (CloudStack's HA passes HostTO,
    whose `parent` StorPoolStoragePool.checkingHeartBeat reads), every host is."""
    assert java.client_ids and all("SP_OURID" not in h.details for h in stack.cs.model.hosts.values())
    assert hosts.check_hosts(stack.ctx, io_window=0) == []
    given = {hid: int(stack.cs.model.hosts[hid].parent or 0) for hid in java.client_ids}
    checked = hosts.check_hosts(stack.ctx, io_window=0, client_ids=given)
    assert {h.host_id: h.client_id for h in checked} == java.client_ids
    assert {h.host_id: h.verdict for h in checked} == dict.fromkeys(java.client_ids, "alive")
    with pytest.raises(ValidationError, match="client_ids"):
        hosts.check_hosts(stack.ctx, io_window=0, client_ids={next(iter(given)): 0})


def test_adopt_dry_run_changes_nothing_then_adopt_makes_them_first_class(stack: LocalStack, java: JavaCloud) -> None:
    conn = stack.ctx.conn(java.pool_id)

    def state() -> list[tuple[str, str, tuple[tuple[str, str], ...]]]:
        return sorted((o.global_id, o.name, tuple(sorted(o.tags.items())))
                      for o in [*conn.volumes(), *conn.snapshots()])

    before, calls0 = state(), dict(stack.sp.calls)
    env = {**stack.driver_env()}
    out = subprocess.run([sys.executable, "-m", "cloudstack_storpool", "pool", "adopt", java.pool_id, "--dry-run",
                          "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert state() == before
    assert not {"VolumeUpdate", "SnapshotUpdate", "VolumeDelete", "SnapshotDelete"} & set(_calls(stack, calls0))
    tagged = {a["ref"] for a in plan["actions"] if a["action"] == adopt.TAG}
    orphans = {a["ref"]: a for a in plan["actions"] if a["action"] == adopt.ORPHAN}
    assert tagged == {java.ref(java.root_volume), java.ref(java.data_volume), java.ref(java.snapshot),
                      java.template_cache} | {s.ref for s in conn.snapshots() if s.tags.get("cs") == "group"}
    assert list(orphans) == [java.orphan_volume] and "no volume" in orphans[java.orphan_volume]["reason"]

    out = subprocess.run([sys.executable, "-m", "cloudstack_storpool", "pool", "adopt", java.pool_id],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ORPHAN" in out.stdout.upper() and java.orphan_volume in out.stdout
    spec = stack.ctx.pool(java.pool_id)
    for ref in tagged:
        obj = conn.volume(ref) or conn.snapshot(ref)
        assert obj is not None and obj.tags["pool"] == spec.key, ref
    # First-class: found by the project's own names, and its tag alone now.
    assert conn.snapshot(templates.cache_name(java.template_id, spec)) is not None
    assert conn.snapshot(f"cs-snap-{java.snapshot}") is not None
    assert conn.volume(java.orphan_volume) is not None  # never deleted without --delete-orphans
    before = dict(stack.sp.calls)
    vid = new_uuid()
    made = volumes.create_from_template(stack.ctx, java.pool_id, vid, java.template_id)
    assert _calls(stack, before) == {"VolumeCreate": 1}  # the Java figure: one call
    stack.cs.model.add_volume("after-adopt", 32 * MiB, storage_id=java.pool_id, path=made.path, volume_id=vid)

    again = adopt.adopt(stack.ctx, java.pool_id, delete_orphans=True, min_age=0)
    assert [a.action for a in again.actions] == [adopt.ORPHAN] and again.done == [java.orphan_volume]
    assert conn.volume(java.orphan_volume) is None


def test_java_volume_migrates_to_a_project_pool(stack: LocalStack, java: JavaCloud) -> None:
    from cloudstack_storpool.driver import migration

    conn = stack.ctx.conn(java.pool_id)
    data = java.ref(java.data_volume)
    res = migration.migrate(stack.ctx, java.data_volume, source_pool=java.pool_id, target_pool="storpool-primary",
                            path=java.paths[java.data_volume], vm_running=False)
    assert res.mode == migration.CLONE
    moved = conn.volume(res.volume.path.replace("/dev/storpool-byid/", "~"))
    assert moved is not None and moved.template == "ssd" and moved.tags["pool"] == stack.pool_id()
    assert moved.iops == 500 and moved.tags["cvm"] == java.vm_id
    assert _read(stack, moved.ref) == b"after--snapshots"
    assert conn.volume(data) is None


def test_backup_and_template_from_a_java_snapshot_run_on_hosts_found_by_parent(
    stack: LocalStack, java: JavaCloud,
) -> None:
    """Agent work on the Java pool: the only client ids are in the hosts' `parent`."""
    from cloudstack_storpool.driver.secondary import SecondaryLocation

    stack.set_bypass(False, wait=True)
    sid = new_uuid()
    stack.cs.model.add_snapshot(java.data_volume, "backed-up")
    where = SecondaryLocation(str(stack.secondary), f"snapshots/{java.data_volume}/{sid}.qcow2")
    info = snapshots.take_snapshot(stack.ctx, volume_uuid=java.data_volume, snapshot_uuid=sid, secondary=where)
    assert info.backup is not None and (stack.secondary / where.path).exists()
    assert info.backup.agent in {a.url for a in stack.agents.values()}

    # A template from the Java snapshot, found by the path CloudStack stored: no data copied on StorPool.
    tid = stack.cs.model.add_template("from-java-snap", 16 * MiB, zone_id=stack.zone_id).id
    made = snapshots.template_from_snapshot(stack.ctx, pool=java.pool_id, template_uuid=tid,
                                            snapshot_uuid=java.snapshot, snapshot_path=java.paths[java.snapshot])
    assert made.source == java.ref(java.snapshot)
    assert _read(stack, "~" + made.global_id)[:15] == b"before-snapshot"


def test_a_java_pool_is_not_removed_while_it_holds_java_objects(stack: LocalStack, java: JavaCloud) -> None:
    from cloudstack_storpool.errors import Conflict

    held = pools.contents(stack.ctx, java.pool_id).objects
    assert len(held) == 7  # root, data, orphan; the cached template, the snapshot, two VM-snapshot members
    with pytest.raises(Conflict) as refused:
        pools.remove(stack.ctx, stack.pools_file, java.pool_id)
    # The cached template does not refuse (it would be deleted with the pool); the rest does.
    assert "holds 6 StorPool objects" in str(refused.value) and java.template_cache not in str(refused.value)
    assert load_pools(stack.pools_file).get(java.pool_id).uuid == java.pool_id
    assert len(pools.contents(stack.ctx, java.pool_id).objects) == 7  # nothing deleted


def test_the_service_audit_reports_abandoned_objects_and_deletes_nothing(
    stack: LocalStack, java: JavaCloud, caplog: pytest.LogCaptureFixture,
) -> None:
    """The Java plugin's abandoned-object collector, on its two settings' periods (one run each here)."""
    from cloudstack_storpool.service.periodic import audit_task

    stack.cs.model.delete_snapshot(java.snapshot)  # CloudStack forgot it; StorPool still has it
    calls0 = dict(stack.sp.calls)
    with caplog.at_level(logging.WARNING, logger="cloudstack_storpool.service.periodic"):
        vols = audit_task(stack.ctx, "volume").once()
        snaps = audit_task(stack.ctx, "snapshot").once()
    assert [o.ref for o in vols] == [java.orphan_volume]
    assert [o.ref for o in snaps] == [java.ref(java.snapshot)]
    assert java.orphan_volume in caplog.text and java.ref(java.snapshot) in caplog.text
    assert not {"VolumeUpdate", "SnapshotUpdate", "VolumeDelete", "SnapshotDelete"} & set(_calls(stack, calls0))
