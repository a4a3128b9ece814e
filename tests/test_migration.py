"""Migration between StorPool pools (in place / clone + rename / resume) and imports."""

from __future__ import annotations

import pytest

from cloudstack_storpool.driver import migration, naming, templates, volumes
from cloudstack_storpool.errors import AgentError, NotFound, ValidationError
from cloudstack_storpool.poolconfig import PoolsFile, PoolSpec, Secret
from tests.driver_harness import Env, new_uuid

GIB = 4 << 20  # small: clones are sparse copies on tmp_path


def make(env: Env, **kw: object) -> tuple[str, volumes.VolumeInfo]:
    vid = new_uuid()
    info = volumes.create(env.ctx, env.pool, vid, GIB, **kw)  # type: ignore[arg-type]
    env.sp.write_object(info.global_id, 0, b"MYDATA!!")
    return vid, info


def test_running_vm_moves_in_place(env: Env) -> None:
    vm = env.add_vm(tags={"vc-policy": "p1"})
    vid, info = make(env, iops=300)
    env.add_volume(vid, vm.id)
    volumes.attached(env.ctx, env.pool, vid, vm_id=vm.id, device_id=1)
    res = migration.migrate(env.ctx, vid, source_pool=env.pool, target_pool=env.pool_b, path=info.path)
    assert res.mode == migration.IN_PLACE
    assert res.volume.global_id == info.global_id and res.volume.path == info.path
    v = env.sp_volume(info.name)
    assert (v.templateName, v.iops) == ("hybrid", 300)
    assert v.tags == {"uuid": vid, "cs": "volume", "pool": env.pool_b.uuid, "cvm": vm.id, "disk": "1", "vc-policy": "p1"}


def test_stopped_vm_clones_deletes_and_renames(env: Env) -> None:
    do = env.add_disk_offering(max_iops=900, details={"SP_QOSCLASS": "gold"})
    vm = env.add_vm(state="Stopped")
    vid, info = make(env)
    env.add_volume(vid, vm.id)
    volumes.attached(env.ctx, env.pool, vid, vm_id=vm.id, device_id=2)
    res = migration.migrate(env.ctx, vid, source_pool=env.pool, target_pool=env.pool_b, disk_offering_id=do.id)
    assert res.mode == migration.CLONE
    assert res.volume.global_id != info.global_id
    assert res.volume.name == naming.volume(vid)
    v = env.sp_volume(naming.volume(vid))
    assert (v.templateName, v.iops) == ("hybrid", 900)
    assert v.tags == {"uuid": vid, "cs": "volume", "pool": env.pool_b.uuid, "cvm": vm.id, "disk": "2", "qc": "gold"}
    assert env.sp.object_file(res.volume.global_id).read_bytes()[:8] == b"MYDATA!!"
    assert info.global_id not in {o.gid for o in env.objects() if not o.snapshot}
    assert env.sp.api().volumesList() and naming.migrating(vid) not in {o.name for o in env.objects()}


def test_iops_carried_over_without_offering(env: Env) -> None:
    vid, _info = make(env, iops=444)
    res = migration.migrate(env.ctx, vid, source_pool=env.pool, target_pool=env.pool_b, vm_running=False)
    assert res.volume.iops == 444 and res.volume.template == "hybrid"


def test_interrupted_migration_is_finished_by_a_rerun(env: Env) -> None:
    vid, info = make(env)
    # As if an earlier run died after deleting the source: only the clone is left.
    api = env.sp.api()
    api.volumeCreate({"name": naming.migrating(vid), "baseOn": info.name, "template": "hybrid",
                      "tags": {"uuid": vid, "cs": "volume", "pool": env.pool_b.uuid}})
    api.volumeDelete(info.name)
    res = migration.migrate(env.ctx, vid, source_pool=env.pool, target_pool=env.pool_b, vm_running=False)
    assert res.volume.name == naming.volume(vid)
    # Run again: already done.
    again = migration.migrate(env.ctx, vid, source_pool=env.pool, target_pool=env.pool_b, vm_running=False)
    assert again.volume.global_id == res.volume.global_id and again.mode == migration.DONE
    with pytest.raises(NotFound):
        migration.migrate(env.ctx, new_uuid(), source_pool=env.pool, target_pool=env.pool_b, vm_running=False)


def test_stale_clone_with_source_present_is_replaced(env: Env) -> None:
    vid, _info = make(env)
    stale = env.sp.api().volumeCreate({"name": naming.migrating(vid), "size": GIB, "template": "ssd"}).globalId
    res = migration.migrate(env.ctx, vid, source_pool=env.pool, target_pool=env.pool_b, vm_running=False)
    assert env.sp.object_file(res.volume.global_id).read_bytes()[:8] == b"MYDATA!!"
    # The stale clone is gone, not reused: one volume under the volume's own name is left.
    assert res.volume.global_id != stale and res.volume.name == naming.volume(vid)
    assert [o.name for o in env.objects() if not o.snapshot] == [naming.volume(vid)]


def test_other_cluster_is_refused_before_anything(env: Env) -> None:
    far = PoolSpec(host="10.9.9.9", port=81, token=Secret("t"), template="ssd", uuid=new_uuid(), name="far")
    env.ctx.pools = PoolsFile((*env.ctx.pools.pools, far))
    vid, _info = make(env)
    before = env.calls()
    with pytest.raises(ValidationError) as exc:
        migration.migrate(env.ctx, vid, source_pool=env.pool, target_pool="far", vm_running=False)
    assert exc.value.field == "target_pool"
    assert env.calls() == before


def test_import_copies_in_and_cleans_up_on_failure(env: Env) -> None:
    src = templates.TemplateSource("/secondary", "volumes/v.qcow2")
    vid = new_uuid()
    res = migration.import_volume(env.ctx, env.pool, vid, src, size=GIB)
    assert res.mode == migration.COPY and res.volume.uuid == vid
    assert env.agent.copies[-1]["command"] == "copy_to_volume"
    assert env.sp.object_file(res.volume.global_id).read_bytes()[:8] == b"TEMPLATE"
    env.agent.fail["copy_to_volume"] = AgentError("copy failed")
    with pytest.raises(AgentError):
        migration.import_volume(env.ctx, env.pool, new_uuid(), src, size=GIB)
    assert [o.tags.get("uuid") for o in env.objects()] == [vid]
