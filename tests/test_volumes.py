"""Volumes on the real emulator: create, idempotent retries, bad input, delete, tags, offerings."""

from __future__ import annotations

import pytest

from cloudstack_storpool.driver import identity, naming, templates, volumes
from cloudstack_storpool.errors import Conflict, NotFound, ValidationError
from tests.driver_harness import Env, new_uuid

GIB = 1 << 30


def test_create_empty_volume_is_one_call_with_identity_tags(env: Env) -> None:
    do = env.add_disk_offering(max_iops=500, details={"SP_QOSCLASS": "gold"})
    vid = new_uuid()
    info = volumes.create(env.ctx, env.pool, vid, GIB, disk_offering_id=do.id)
    assert env.calls() == {"VolumeCreate": 1}
    assert info.name == naming.volume(vid)
    assert info.path == "/dev/storpool-byid/" + info.global_id
    v = env.sp_volume(info.name)
    assert v.size == GIB and v.iops == 500 and v.templateName == "ssd"
    assert v.tags == {"uuid": vid, "cs": "volume", "pool": env.pool.uuid, "qc": "gold"}


def test_encrypted_volume_gets_two_mib_more(env: Env) -> None:
    info = volumes.create(env.ctx, env.pool, new_uuid(), GIB, encrypted=True)
    assert env.sp_volume(info.name).size == GIB + (2 << 20)


def test_create_retried_with_same_uuid_returns_the_same_volume(env: Env) -> None:
    vid = new_uuid()
    first = volumes.create(env.ctx, env.pool, vid, GIB)
    again = volumes.create(env.ctx, env.pool, vid, GIB)
    assert again.global_id == first.global_id
    assert len(env.objects()) == 1


def test_create_over_a_foreign_volume_is_a_conflict(env: Env) -> None:
    vid = new_uuid()
    env.sp.api().volumeCreate({"name": naming.volume(vid), "size": GIB, "template": "ssd", "tags": {"uuid": "x"}})
    with pytest.raises(Conflict):
        volumes.create(env.ctx, env.pool, vid, GIB)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"size": -512}, "size"),
        ({"size": 1000}, "size"),
        ({"size": 0}, "size"),
        ({"volume_uuid": "not-a-uuid"}, "volume_uuid"),
        ({"pool": "no-such-pool"}, "pool"),
        ({"iops": -5}, "iops"),
        ({"disk_offering_id": "missing"}, "disk_offering_id"),
    ],
)
def test_bad_input_creates_nothing(env: Env, kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"pool": env.pool, "volume_uuid": new_uuid(), "size": GIB}
    args.update(kwargs)
    pool, vid, size = args.pop("pool"), args.pop("volume_uuid"), args.pop("size")
    with pytest.raises(ValidationError) as exc:
        volumes.create(env.ctx, pool, vid, size, **args)  # type: ignore[arg-type]
    assert exc.value.field == field
    assert env.objects() == []
    assert env.calls().get("VolumeCreate", 0) == 0


def test_forbidden_template_name_in_offering_creates_nothing(env: Env) -> None:
    do = env.add_disk_offering(details={"SP_TEMPLATE": "ssd;rm"})
    with pytest.raises(ValidationError) as exc:
        volumes.create(env.ctx, env.pool, new_uuid(), GIB, disk_offering_id=do.id)
    assert exc.value.field == "disk_offering.SP_TEMPLATE"
    assert env.objects() == []


def test_root_from_unknown_template_creates_nothing(env: Env) -> None:
    with pytest.raises(ValidationError) as exc:
        volumes.create_from_template(env.ctx, env.pool, new_uuid(), new_uuid())
    assert exc.value.field == "template_uuid"
    t = env.add_template(size=GIB)
    with pytest.raises(ValidationError) as exc:
        volumes.create_from_template(env.ctx, env.pool, new_uuid(), t.id, size=GIB // 2)
    assert exc.value.field == "size"
    assert env.objects() == []
    assert env.calls() == {}


def test_root_from_template_offering_template_missing_in_storpool(env: Env) -> None:
    t = env.add_template(size=1 << 20)
    do = env.add_disk_offering(details={"SP_TEMPLATE": "gone"})
    with pytest.raises(ValidationError) as exc:
        volumes.create_from_template(env.ctx, env.pool, new_uuid(), t.id, disk_offering_id=do.id,
                                     source=templates.TemplateSource("/sec", "t/1.qcow2"))
    assert exc.value.field == "template"
    assert env.objects() == []


def test_root_without_cache_and_without_source_is_refused(env: Env) -> None:
    t = env.add_template(size=1 << 20)
    with pytest.raises(ValidationError) as exc:
        volumes.create_from_template(env.ctx, env.pool, new_uuid(), t.id)
    assert exc.value.field == "source"
    assert env.objects() == []


def test_root_from_template_fills_once_then_one_call_each(env: Env) -> None:
    t = env.add_template(size=1 << 20)
    src = templates.TemplateSource("/sec", "template/1.qcow2", "QCOW2")
    so = env.add_service_offering(max_iops=1000)
    first = volumes.create_from_template(env.ctx, env.pool, new_uuid(), t.id, source=src, service_offering_id=so.id)
    assert len(env.agent.copies) == 1
    assert env.agent.copies[0]["source_format"] == "qcow2"
    before = env.calls()
    second = volumes.create_from_template(env.ctx, env.pool, new_uuid(), t.id, source=src, service_offering_id=so.id,
                                          size=4 << 20)
    after = env.calls()
    assert {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)} == {"VolumeCreate": 1}
    assert len(env.agent.copies) == 1
    for info in (first, second):
        v = env.sp_volume(info.name)
        assert v.parentName == templates.cache_name(t.id, env.pool)
        assert v.iops == 1000
        assert env.sp.object_file(info.global_id).read_bytes()[:8] == b"TEMPLATE"
    assert env.sp_volume(second.name).size == 4 << 20
    # No fill volume left.
    assert [o.name for o in env.objects() if o.name and o.name.startswith("cs-fill-")] == []


def test_delete_missing_is_success_and_attached_is_forced(env: Env) -> None:
    vid = new_uuid()
    info = volumes.create(env.ctx, env.pool, vid, GIB)
    env.sp.api().volumesReassign([{"volume": info.name, "rw": [1]}])
    res = volumes.delete(env.ctx, env.pool, vid, path=info.path)
    assert res.deleted and res.backup is None
    assert env.objects() == []
    assert volumes.delete(env.ctx, env.pool, vid).deleted is False


def test_delete_with_delay_keeps_a_backup(env: Env) -> None:
    env.set_setting("storpool.delete.after.interval", 600, pool=env.pool.uuid)  # this pool only
    vid = new_uuid()
    volumes.create(env.ctx, env.pool, vid, GIB)
    res = volumes.delete(env.ctx, env.pool, vid)
    assert res.deleted and res.backup == naming.delay_delete(vid, int(env.clock.now * 1000))
    snap = env.sp.api().snapshotList(res.backup)[0]
    assert snap.tags == {"uuid": vid, "cs": "delayDelete", "pool": env.pool.uuid}
    assert snap.targetDeleteDate > 0
    # The setting is read in the pool's scope: the other pool (global value 0) deletes at once.
    other = new_uuid()
    volumes.create(env.ctx, env.pool_b, other, GIB)
    assert volumes.delete(env.ctx, env.pool_b, other).backup is None
    # Deleting a volume that is already gone takes no backup.
    assert volumes.delete(env.ctx, env.pool, vid) == volumes.DeleteResult(vid, False)


def test_change_offering_reapplies_template_qc_and_iops(env: Env) -> None:
    vid = new_uuid()
    iops500 = env.add_disk_offering(max_iops=500, details={"SP_QOSCLASS": "gold"})
    plain_nvme = env.add_disk_offering(details={"SP_TEMPLATE": "nvme"})
    volumes.create(env.ctx, env.pool, vid, GIB, disk_offering_id=iops500.id)
    info = volumes.change_offering(env.ctx, env.pool, vid, disk_offering_id=plain_nvme.id)
    assert (info.template, info.iops, info.qos_class) == ("nvme", None, None)
    v = env.sp_volume(naming.volume(vid))
    assert v.iops == "-" and "qc" not in v.tags
    info = volumes.change_offering(env.ctx, env.pool, vid, disk_offering_id=iops500.id)
    assert (info.template, info.iops, info.qos_class) == ("ssd", 500, "gold")
    with pytest.raises(NotFound):
        volumes.change_offering(env.ctx, env.pool, new_uuid(), disk_offering_id=iops500.id)


def test_vm_tags_changed_writes_the_value_the_caller_hands_over(env: Env) -> None:
    """CloudStack calls provideVmTags inside the transaction writing the tag: its API still shows
    the old tags, so the value the management server hands over is what is written."""
    vm = env.add_vm(tags={"vc-policy": "old"})
    vid = new_uuid()
    info = volumes.create(env.ctx, env.pool, vid, GIB)
    volumes.attached(env.ctx, env.pool, vid, vm_id=vm.id, device_id=1, path=info.path)
    assert volumes.vm_tags_changed(env.ctx, vm.id, vc_policy="gold") == [info.name]
    assert env.sp_volume(info.name).tags["vc-policy"] == "gold"
    assert volumes.vm_tags_changed(env.ctx, vm.id, vc_policy="") == [info.name]
    assert "vc-policy" not in env.sp_volume(info.name).tags
    with pytest.raises(ValidationError) as bad:
        volumes.vm_tags_changed(env.ctx, vm.id, vc_policy="two words")
    assert bad.value.field == "vc_policy"
    assert volumes.vm_tags_changed(env.ctx, vm.id) == [info.name]  # none handed over: CloudStack's own
    assert env.sp_volume(info.name).tags["vc-policy"] == "old"


def test_attach_detach_and_vm_tag_propagation(env: Env) -> None:
    vm = env.add_vm(tags={"vc-policy": "gold-backup"})
    vid, later = new_uuid(), new_uuid()
    info = volumes.create(env.ctx, env.pool, vid, GIB)
    volumes.create(env.ctx, env.pool_b, later, GIB)
    written = volumes.attached(env.ctx, env.pool, vid, vm_id=vm.id, device_id=1, path=info.path)
    assert written == {"cvm": vm.id, "disk": "1", "vc-policy": "gold-backup"}
    assert env.sp_volume(info.name).tags["vc-policy"] == "gold-backup"

    env.cs.model.set_vm_tags(vm.id, {"vc-policy": "silver"})
    assert volumes.vm_tags_changed(env.ctx, vm.id) == [info.name]
    assert env.sp_volume(info.name).tags["vc-policy"] == "silver"
    # A volume attached later gets the current VM tag.
    volumes.attached(env.ctx, env.pool_b, later, vm_id=vm.id, device_id=2)
    assert env.sp_volume(naming.volume(later)).tags["vc-policy"] == "silver"

    env.cs.model.set_vm_tags(vm.id, {})
    assert sorted(volumes.vm_tags_changed(env.ctx, vm.id)) == sorted([info.name, naming.volume(later)])
    assert "vc-policy" not in env.sp_volume(info.name).tags
    assert env.sp_volume(info.name).tags["cvm"] == vm.id

    assert volumes.detached(env.ctx, env.pool, vid) is True
    assert set(env.sp_volume(info.name).tags) == {"uuid", "cs", "pool"}
    assert sorted(volumes.vm_destroyed(env.ctx, vm.id)) == [naming.volume(later)]
    assert set(env.sp_volume(naming.volume(later)).tags) == {"uuid", "cs", "pool"}
    assert volumes.detached(env.ctx, env.pool, new_uuid()) is False


def test_attach_bad_input(env: Env) -> None:
    vid = new_uuid()
    volumes.create(env.ctx, env.pool, vid, GIB)
    vm = env.add_vm(tags={"vc-policy": "has space"})
    with pytest.raises(ValidationError) as exc:
        volumes.attached(env.ctx, env.pool, vid, vm_id=vm.id, device_id=0)
    assert exc.value.field.startswith("vm.tags")
    with pytest.raises(ValidationError):
        volumes.attached(env.ctx, env.pool, vid, vm_id="nope", device_id=0)
    with pytest.raises(ValidationError):
        volumes.attached(env.ctx, env.pool, vid, vm_id=vm.id, device_id=-1)
    with pytest.raises(NotFound):
        volumes.attached(env.ctx, env.pool, new_uuid(), vm_id=env.add_vm().id, device_id=0)
    assert set(env.sp_volume(naming.volume(vid)).tags) == {"uuid", "cs", "pool"}


def test_ref_and_get(env: Env) -> None:
    vid = new_uuid()
    info = volumes.create(env.ctx, env.pool, vid, GIB)
    assert identity.ref(volume_uuid=vid) == naming.volume(vid)
    assert identity.ref(volume_uuid=vid, path=info.path) == "~" + info.global_id
    assert identity.ref(path="/dev/storpool/legacy-name") == "legacy-name"
    with pytest.raises(ValidationError):
        identity.ref()
    assert identity.get(env.ctx, env.pool, path=info.path).uuid == vid
    assert identity.find(env.ctx, env.pool, volume_uuid=new_uuid()) is None
    with pytest.raises(NotFound):
        identity.get(env.ctx, env.pool, volume_uuid=new_uuid())


def test_vm_destroyed_refuses_a_bad_vm_id(env: Env) -> None:
    """Review: a VM id that is not a CloudStack uuid is refused naming `vm_id` (it used to scan
    every cluster and answer "nothing to do"); so is another spelling of the VM's own uuid, which
    the `cvm` tags would never match."""
    vm = env.add_vm()
    vid = new_uuid()
    info = volumes.create(env.ctx, env.pool, vid, GIB)
    volumes.attached(env.ctx, env.pool, vid, vm_id=vm.id, device_id=1)
    for bad in ("not-a-uuid", "~x", vm.id + "x", vm.id.upper(), vm.id.replace("-", "")):
        with pytest.raises(ValidationError) as err:
            volumes.vm_destroyed(env.ctx, bad)
        assert err.value.field == "vm_id"
    assert env.sp_volume(info.name).tags["cvm"] == vm.id
    assert volumes.vm_destroyed(env.ctx, vm.id) == [info.name]
    assert "cvm" not in env.sp_volume(info.name).tags
