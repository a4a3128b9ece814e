"""Volume snapshots, the bypass, volumes and templates from snapshots, against the
real StorPool emulator and CloudStack simulator with recording agents."""

from __future__ import annotations

import pytest

from cloudstack_storpool.driver import naming, snapshots, tags, templates
from cloudstack_storpool.driver.snapshots import SecondaryLocation
from cloudstack_storpool.errors import AgentError, Conflict, NotFound, StorPoolError, ValidationError
from cloudstack_storpool.spconn import Ref
from cloudstack_storpool.typedjson import to_json
from tests.driver_harness import Env, MiB, new_uuid

SEC = SecondaryLocation("/srv/secondary", "snapshots/2/1/s.qcow2")


def vm1(env: Env) -> str:
    return next(v.id for v in env.cs.model.vms.values() if v.name == "vm1")


# ---------------------------------------------------------------------------- take


def test_bypass_true_is_one_call_and_tags(env: Env) -> None:
    env.set_bypass(True)
    vid, _ = env.volume(vm_id=vm1(env))
    sid = new_uuid()
    before = dict(env.sp.calls)
    info = snapshots.take_snapshot(env.ctx, volume_uuid=vid, snapshot_uuid=sid)
    sent = {k: v - before.get(k, 0) for k, v in env.sp.calls.items() if v != before.get(k, 0)}
    assert sent == {"VolumeSnapshot": 1}
    assert info.bypassed and info.backup is None and not info.recovered
    snap = env.conn.snapshot(naming.snapshot(sid))
    assert snap is not None and info.path == f"/dev/storpool-byid/{snap.global_id}"
    assert snap.tags == {tags.UUID: sid, tags.KIND: tags.SNAPSHOT, tags.VM: vm1(env), tags.POOL: env.pool.uuid}
    assert env.agents.all_calls() == []


def test_bypass_false_backs_up_through_an_agent(env: Env) -> None:
    env.set_bypass(False)
    vid, _ = env.volume()
    sid = new_uuid()
    info = snapshots.take_snapshot(env.ctx, volume_uuid=vid, snapshot_uuid=sid, secondary=SEC)
    assert not info.bypassed and info.backup is not None and info.backup.path == SEC.path
    assert env.agents.pool_agent.calls == [
        ("backup_snapshot", {"snapshot": naming.snapshot(sid), "store": SEC.store, "path": SEC.path, "progress": None})]
    assert naming.snapshot(sid) in env.snapshot_names()  # kept on StorPool too


@pytest.mark.parametrize(("sp_bypass", "backup_to_secondary", "bypassed", "decided_by"), [
    ("false", "true", False, "snapshot.backup.to.secondary"),  # the defaults: backed up
    ("true", "true", True, "sp.bypass.secondary.storage"),  # the plugin's key asks for StorPool only
    ("false", "false", True, "snapshot.backup.to.secondary"),  # CloudStack's key asks for primary only
    ("true", "false", True, "sp.bypass.secondary.storage"),  # both do: the plugin's key is reported
])
def test_either_key_keeps_the_snapshot_on_storpool(env: Env, sp_bypass: str, backup_to_secondary: str,
                                                   bypassed: bool, decided_by: str) -> None:
    """`sp.bypass.secondary.storage` (true = StorPool only) and CloudStack's
    `snapshot.backup.to.secondary` (false = primary only): either one asking decides."""
    client = env.cs.client()
    client.update_configuration("sp.bypass.secondary.storage", sp_bypass)
    client.update_configuration("snapshot.backup.to.secondary", backup_to_secondary)
    vid, _ = env.volume()
    info = snapshots.take_snapshot(env.ctx, volume_uuid=vid, snapshot_uuid=new_uuid(), secondary=SEC)
    assert (info.bypassed, info.decided_by) == (bypassed, decided_by)
    assert to_json(info)["decided_by"] == decided_by
    assert (info.backup is None) == bypassed
    assert [c for c, _ in env.agent.calls].count("backup_snapshot") == (0 if bypassed else 1)


def test_setting_is_read_at_each_snapshot(env: Env) -> None:
    vid, _ = env.volume()
    env.set_bypass(True)
    assert snapshots.take_snapshot(env.ctx, volume_uuid=vid, snapshot_uuid=new_uuid(), secondary=SEC).bypassed
    env.set_bypass(False)
    assert not snapshots.take_snapshot(env.ctx, volume_uuid=vid, snapshot_uuid=new_uuid(), secondary=SEC).bypassed
    assert len(env.agents.pool_agent.calls) == 1


def test_failed_backup_deletes_the_snapshot(env: Env) -> None:
    env.set_bypass(False)
    vid, _ = env.volume()
    sid = new_uuid()
    env.agents.pool_agent.fail["backup_snapshot"] = "qemu-img convert: No space left on device"
    with pytest.raises(AgentError, match="No space left") as err:
        snapshots.take_snapshot(env.ctx, volume_uuid=vid, snapshot_uuid=sid, secondary=SEC)
    assert "removed" in str(err.value) and "No space left" in str(err.value)
    assert naming.snapshot(sid) not in env.snapshot_names()


def test_refusals_change_nothing(env: Env) -> None:
    vid, _ = env.volume()
    env.set_bypass(False)
    before = env.snapshot_names()
    with pytest.raises(ValidationError) as e1:
        snapshots.take_snapshot(env.ctx, volume_uuid=vid, snapshot_uuid=new_uuid(), secondary=SEC, encrypted=True)
    assert e1.value.field == "encrypted"
    with pytest.raises(ValidationError) as e2:
        snapshots.take_snapshot(env.ctx, volume_uuid=vid, snapshot_uuid=new_uuid())
    assert e2.value.field == "secondary"
    with pytest.raises(ValidationError) as e3:
        snapshots.take_snapshot(env.ctx, volume_uuid=vid, snapshot_uuid=new_uuid(),
                                secondary=SecondaryLocation("/srv", "../../etc/passwd"))
    assert e3.value.field == "secondary.path"
    with pytest.raises(ValidationError) as e4:
        snapshots.take_snapshot(env.ctx, volume_uuid=vid, snapshot_uuid="not-a-uuid", secondary=SEC)
    assert e4.value.field == "snapshot_uuid"
    with pytest.raises(NotFound):
        snapshots.take_snapshot(env.ctx, volume_uuid=new_uuid(), snapshot_uuid=new_uuid(), secondary=SEC)
    assert env.snapshot_names() == before
    assert env.agents.all_calls() == []
    env.set_bypass(True)  # encrypted is fine when bypassed
    assert snapshots.take_snapshot(env.ctx, volume_uuid=vid, snapshot_uuid=new_uuid(), encrypted=True).bypassed


def test_volume_on_another_pool_is_refused(env: Env) -> None:
    other = env.cs.model.add_storage_pool("nfs-pool", provider="DefaultPrimary")
    vol = env.cs.model.add_volume("nfs-vol", 8 * MiB, storage_id=other.id, path="abc")
    with pytest.raises(ValidationError, match="not on a StorPool pool") as err:
        snapshots.take_snapshot(env.ctx, volume_uuid=vol.id, snapshot_uuid=new_uuid())
    assert err.value.field == "volume_uuid"


def test_take_twice_and_lost_response_make_one_snapshot(env: Env) -> None:
    env.set_bypass(True)
    vid, _ = env.volume()
    sid = new_uuid()
    first = snapshots.take_snapshot(env.ctx, volume_uuid=vid, snapshot_uuid=sid)
    again = snapshots.take_snapshot(env.ctx, volume_uuid=vid, snapshot_uuid=sid)
    assert again.recovered and again.global_id == first.global_id
    sid2 = new_uuid()
    env.sp.faults.drop_after_apply("VolumeSnapshot")
    lost = snapshots.take_snapshot(env.ctx, volume_uuid=vid, snapshot_uuid=sid2)
    assert lost.recovered
    mine = [s for s in env.conn.snapshots() if (s.tags or {}).get(tags.UUID) in (sid, sid2)]
    assert len(mine) == 2


def test_storpool_error_on_snapshot_leaves_nothing(env: Env) -> None:
    env.set_bypass(False)
    vid, _ = env.volume()
    env.sp.faults.fail_next("VolumeSnapshot", error="insufficientResources")
    with pytest.raises(StorPoolError):
        snapshots.take_snapshot(env.ctx, volume_uuid=vid, snapshot_uuid=new_uuid(), secondary=SEC)
    assert env.snapshot_names() == set()
    assert env.agents.all_calls() == []


# ---------------------------------------------------------------------------- delete / revert


def test_delete_detaches_and_missing_is_success(env: Env) -> None:
    env.set_bypass(True)
    vid, _ = env.volume()
    sid = new_uuid()
    snapshots.take_snapshot(env.ctx, volume_uuid=vid, snapshot_uuid=sid)
    env.conn.attach(Ref("snapshot", naming.snapshot(sid)), 2, "ro")
    assert snapshots.delete_snapshot(env.ctx, pool=env.pool.uuid, snapshot_uuid=sid).existed
    assert naming.snapshot(sid) not in env.snapshot_names()
    assert not snapshots.delete_snapshot(env.ctx, pool=env.pool.uuid, snapshot_uuid=sid).existed


def test_revert_restores_data_keeps_tags_and_iops(env: Env) -> None:
    env.set_bypass(True)
    vm = vm1(env)
    vid, ref = env.volume(vm_id=vm, max_iops=700, device_id=1,
                          extra_tags={"cvm": vm, "disk": "1", "vc_policy": "gold-policy"})
    env.write(ref, 0, b"before")
    sid = new_uuid()
    snapshots.take_snapshot(env.ctx, volume_uuid=vid, snapshot_uuid=sid)
    env.write(ref, 0, b"after!")
    with pytest.raises(Conflict, match="Running"):
        snapshots.revert_snapshot(env.ctx, volume_uuid=vid, snapshot_uuid=sid)
    assert env.read(ref, 0, 6) == b"after!"
    env.cs.model.stop_vm(vm)
    env.conn.attach(Ref("volume", ref), 1, "rw")  # a stale attachment of the last host
    env.conn.volume_update(ref, iops=5)  # whatever StorPool holds, CloudStack's max IOPS wins
    res = snapshots.revert_snapshot(env.ctx, volume_uuid=vid, snapshot_uuid=sid)
    assert env.read(ref, 0, 6) == b"before"
    vol = env.conn.volume(ref)
    assert vol.iops == 700 and res.iops == 700
    assert {k: vol.tags[k] for k in ("cvm", "disk", "vc-policy")} == {"cvm": vm, "disk": "1", "vc-policy": "gold-policy"}
    assert not [a for a in env.conn.attachments() if a.global_id == ref[1:]]


# ---------------------------------------------------------------------------- from snapshots


def test_volume_from_snapshot_is_one_create_no_copy(env: Env) -> None:
    env.set_bypass(True)
    vid, ref = env.volume(max_iops=300)
    env.write(ref, MiB, b"snapshot content")
    sid = env.cs.model.add_snapshot(vid).id  # CloudStack records the snapshot, then asks the driver
    snapshots.take_snapshot(env.ctx, volume_uuid=vid, snapshot_uuid=sid)
    env.conn.volume_update(ref, iops=1)  # the source's max IOPS in CloudStack is what counts
    nid = new_uuid()
    before = dict(env.sp.calls)
    out = snapshots.volume_from_snapshot(env.ctx, pool=env.pool.uuid, snapshot_uuid=sid, volume_uuid=nid)
    sent = {k: v - before.get(k, 0) for k, v in env.sp.calls.items() if v != before.get(k, 0)}
    assert sent == {"VolumeCreate": 1}
    assert out.source == "storpool" and out.copied_bytes == 0 and env.agents.all_calls() == []
    assert env.read("~" + out.global_id, MiB, 16) == b"snapshot content"
    vol = env.conn.volume(naming.volume(nid))
    assert vol.iops == 300 and vol.tags[tags.UUID] == nid and vol.tags[tags.KIND] == tags.VOLUME
    again = snapshots.volume_from_snapshot(env.ctx, pool=env.pool.uuid, snapshot_uuid=sid, volume_uuid=nid)
    assert again.recovered and again.global_id == out.global_id


def test_volume_from_snapshot_takes_the_offering_like_any_create(env: Env) -> None:
    """A volume from a snapshot takes its offering (template, `qc`, iops) as any create does."""
    env.set_bypass(True)
    vid, _ = env.volume(max_iops=300)
    sid = env.cs.model.add_snapshot(vid).id
    snapshots.take_snapshot(env.ctx, volume_uuid=vid, snapshot_uuid=sid)
    env.cs.model.add_disk_offering("sp-hybrid-template", disk_size_gb=20, details={"SP_TEMPLATE": "hybrid"})
    offering = {o.name: o.id for o in env.cs.model.disk_offerings.values()}
    made = {}
    for name in ("sp-iops-500", "sp-hybrid-template", "sp-gold"):
        nid = new_uuid()
        made[name] = snapshots.volume_from_snapshot(env.ctx, pool=env.pool.uuid, snapshot_uuid=sid, volume_uuid=nid,
                                                    disk_offering_id=offering[name])
        assert made[name].source == "storpool"
    iops = env.conn.volume(made["sp-iops-500"].name)
    assert (iops.iops, made["sp-iops-500"].iops) == (500, 500)
    hybrid = env.conn.volume(made["sp-hybrid-template"].name)
    assert hybrid.template == "hybrid" == made["sp-hybrid-template"].template
    assert hybrid.iops == 300  # no limit in the offering: the source volume's max IOPS
    gold = env.conn.volume(made["sp-gold"].name)
    assert gold.tags[tags.QOS_CLASS] == "gold" == made["sp-gold"].qos_class
    custom = snapshots.volume_from_snapshot(env.ctx, pool=env.pool.uuid, snapshot_uuid=sid, volume_uuid=new_uuid(),
                                            disk_offering_id=offering["sp-iops-500"], iops=700)
    assert env.conn.volume(custom.name).iops == 700  # custom IOPS win, as for any create
    with pytest.raises(ValidationError) as bad:
        snapshots.volume_from_snapshot(env.ctx, pool=env.pool.uuid, snapshot_uuid=sid, volume_uuid=new_uuid(),
                                       disk_offering_id=new_uuid())
    assert bad.value.field == "disk_offering_id"


def test_volume_from_snapshot_gone_uses_secondary(env: Env) -> None:
    env.set_bypass(True)
    vid, _ = env.volume(size=12 * MiB)
    sid = env.cs.model.add_snapshot(vid).id
    snapshots.take_snapshot(env.ctx, volume_uuid=vid, snapshot_uuid=sid)
    env.conn.snapshot_delete(naming.snapshot(sid))
    with pytest.raises(NotFound, match="no secondary copy"):
        snapshots.volume_from_snapshot(env.ctx, pool=env.pool.uuid, snapshot_uuid=sid, volume_uuid=new_uuid())
    nid = new_uuid()
    out = snapshots.volume_from_snapshot(env.ctx, pool=env.pool.uuid, snapshot_uuid=sid, volume_uuid=nid,
                                         secondary=SEC)
    assert out.source == "secondary"
    assert env.conn.volume(naming.volume(nid)).size == 12 * MiB  # the source volume's size, from CloudStack
    assert env.agents.pool_agent.calls[-1][0] == "copy_to_volume"
    assert env.agents.pool_agent.calls[-1][1]["volume"] == "~" + out.global_id
    # A failed copy removes the empty volume it made.
    env.agents.pool_agent.fail["copy_to_volume"] = "image is corrupt"
    nid2 = new_uuid()
    with pytest.raises(AgentError, match="corrupt"):
        snapshots.volume_from_snapshot(env.ctx, pool=env.pool.uuid, snapshot_uuid=sid, volume_uuid=nid2,
                                       size=8 * MiB, secondary=SEC)
    assert naming.volume(nid2) not in env.volume_names()


def golden_snapshot(env: Env) -> str:
    """A snapshot (bypassed, StorPool only) of a volume holding "golden image"; its uuid."""
    env.set_bypass(True)
    vid, ref = env.volume()
    env.write(ref, 0, b"golden image")
    sid = new_uuid()
    snapshots.take_snapshot(env.ctx, volume_uuid=vid, snapshot_uuid=sid)
    return sid


def test_template_from_snapshot_is_found_by_the_cache(env: Env) -> None:
    sid, tid = golden_snapshot(env), new_uuid()
    out = snapshots.template_from_snapshot(env.ctx, pool=env.pool.uuid, template_uuid=tid, snapshot_uuid=sid)
    assert out.name == naming.template_cache(tid, env.pool.uuid) and out.secondary is None
    assert env.agents.all_calls() == []  # no copy at all
    hit = templates.cached(env.ctx, env.pool, tid)
    assert hit is not None and hit.global_id == out.global_id
    snap = env.conn.snapshot(out.name)
    assert snap.tags[tags.UUID] == tid and snap.tags[tags.KIND] == tags.TEMPLATE and snap.tags[tags.POOL] == env.pool.uuid
    assert env.read("~" + out.global_id, 0, 12) == b"golden image"
    assert not [v for v in env.conn.volumes() if (v.tags or {}).get(tags.KIND) == tags.TEMPORARY]


def test_template_from_snapshot_secondary_failure_removes_cache(env: Env) -> None:
    env.set_bypass(True)
    vid, _ = env.volume()
    sid, tid = new_uuid(), new_uuid()
    snapshots.take_snapshot(env.ctx, volume_uuid=vid, snapshot_uuid=sid)
    env.agents.pool_agent.fail["backup_snapshot"] = "secondary storage is read-only"
    with pytest.raises(AgentError, match="read-only"):
        snapshots.template_from_snapshot(env.ctx, pool=env.pool.uuid, template_uuid=tid, snapshot_uuid=sid,
                                         secondary=SecondaryLocation("nfs://nfs.example/export", "template/t.qcow2"))
    assert templates.cached(env.ctx, env.pool, tid) is None
    assert env.volume_names() == {naming.volume(vid)}


def test_template_from_volume_and_bad_arguments(env: Env) -> None:
    vid, ref = env.volume()
    env.write(ref, 0, b"volume data")
    tid = new_uuid()
    out = snapshots.template_from_snapshot(env.ctx, pool=env.pool.uuid, template_uuid=tid, volume_uuid=vid,
                                           secondary=SecondaryLocation("/srv/sec", "template/x.qcow2"))
    assert out.secondary is not None and env.read("~" + out.global_id, 0, 11) == b"volume data"
    with pytest.raises(ValidationError):
        snapshots.template_from_snapshot(env.ctx, pool=env.pool.uuid, template_uuid=new_uuid())
    with pytest.raises(NotFound):
        snapshots.template_from_snapshot(env.ctx, pool=env.pool.uuid, template_uuid=new_uuid(), snapshot_uuid=new_uuid())


def test_failed_undo_is_reported_with_the_cause(env: Env) -> None:
    env.set_bypass(False)
    vid, _ = env.volume()
    sid = new_uuid()
    env.agents.pool_agent.fail["backup_snapshot"] = "agent lost its NFS mount"
    env.sp.faults.fail_next("SnapshotDelete", error="notAllowed")
    with pytest.raises(AgentError) as err:
        snapshots.take_snapshot(env.ctx, volume_uuid=vid, snapshot_uuid=sid, secondary=SEC)
    text = str(err.value)
    assert "NFS mount" in text and "undoing it failed too" in text and "notAllowed" in text
    # Nothing hidden: the leftover is exactly the named snapshot, and deleting it later works.
    assert naming.snapshot(sid) in env.snapshot_names()
    assert snapshots.delete_snapshot(env.ctx, pool=env.pool.uuid, snapshot_uuid=sid).existed


def test_template_from_snapshot_secondary_failure_keeps_a_cache_it_did_not_make(env: Env) -> None:
    """Review: the undo of a failed secondary copy removes only what this call made. A cache
    that was already there (made by an earlier call, root volumes cloned from it) stays."""
    sid, tid = golden_snapshot(env), new_uuid()
    first = snapshots.template_from_snapshot(env.ctx, pool=env.pool.uuid, template_uuid=tid, snapshot_uuid=sid)
    env.agents.pool_agent.fail["backup_snapshot"] = "secondary storage is read-only"
    with pytest.raises(AgentError, match="read-only"):
        snapshots.template_from_snapshot(env.ctx, pool=env.pool.uuid, template_uuid=tid, snapshot_uuid=sid,
                                         secondary=SecondaryLocation("nfs://nfs.example/export", "template/t.qcow2"))
    kept = templates.cached(env.ctx, env.pool, tid)
    assert kept is not None and kept.global_id == first.global_id
