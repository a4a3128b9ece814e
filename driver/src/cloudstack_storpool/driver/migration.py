"""Moving a volume between pools.

* Between StorPool pools of one cluster, VM running: VolumeUpdate `template` (StorPool moves
  the data in place; the volume, its name and path stay).
* Stopped or detached: VolumeCreate `baseOn` the source named `naming.migrating(uuid)`, delete
  the source, rename the clone to `naming.volume(uuid)`. The global id (and so CloudStack's path)
  changes; the result carries the new path.
* From a non-StorPool pool: create the volume, then a KVM host's agent copies the image in
  (`copy_to_volume`); a failed copy deletes the volume again.

Template, `qc` and iops come from the offerings when given, else are carried over from the
source (iops) with the target pool's template. Tags (`uuid`, `cs`, `cvm`, `disk`, `vc-policy`)
are carried over and `pool` becomes the target pool. A migration interrupted part-way is
finished by running it again: the source is the truth until it is deleted, the clone after.
Pools on different StorPool clusters are refused (no data path between clusters here).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cloudstack_storpool.bounds import Iops
from cloudstack_storpool.driver import identity, naming, offerings, pools, tags, volumes
from cloudstack_storpool.driver.agenttimeouts import copy_timeout
from cloudstack_storpool.driver.identity import VolumeInfo
from cloudstack_storpool.driver.offerings import Placement
from cloudstack_storpool.driver.secondary import agent_refusals
from cloudstack_storpool.errors import NotFound, ProjectError, SpExists, ValidationError
from cloudstack_storpool.uuids import Uuid, check_uuid

if TYPE_CHECKING:
    from cloudstack_storpool.driver.context import DriverContext
    from cloudstack_storpool.driver.templates import TemplateSource
    from cloudstack_storpool.poolconfig import PoolSpec
    from cloudstack_storpool.spconn import Created, StorPoolConn

log = logging.getLogger(__name__)

IN_PLACE = "in-place"
CLONE = "clone"
COPY = "copy"
DONE = "done"


@dataclass(frozen=True)
class MigrationResult:
    mode: str
    """in-place (running VM), clone (baseOn + delete + rename), copy (from another storage) or
    done (a repeated request: the volume was already on the target pool)."""
    source_pool: str | None
    target_pool: str
    volume: VolumeInfo


def _vm_running(ctx: DriverContext, volume_uuid: Uuid) -> bool:
    """Ask CloudStack whether the volume's VM is running (a detached volume is not)."""
    vol = ctx.cloudstack.volume(volume_uuid)
    if vol is None:
        raise ValidationError("volume_uuid", f"CloudStack has no volume {volume_uuid}")
    if not vol.vm_id:
        return False
    vm = ctx.cloudstack.vm(vol.vm_id)
    return vm is not None and vm.state == "Running"


def _placement(
    ctx: DriverContext, dst: PoolSpec, source: Any, *, volume_type: str, disk_offering_id: str | None,
    service_offering_id: str | None, iops: int | None,
) -> Placement:
    if disk_offering_id or service_offering_id or iops is not None:
        return offerings.resolve(ctx, dst, volume_type=volume_type, disk_offering_id=disk_offering_id,
                                 service_offering_id=service_offering_id, custom_iops=iops, size=int(source.size))
    qc = source.tags.get(tags.QOS_CLASS) or None
    return Placement(template=dst.template, qos_class=qc, iops=source.iops or None)


def migrate(
    ctx: DriverContext,
    volume_uuid: Uuid,
    *,
    source_pool: PoolSpec | str,
    target_pool: PoolSpec | str,
    path: str | None = None,
    vm_running: bool | None = None,
    volume_type: str = offerings.DATADISK,
    disk_offering_id: str | None = None,
    service_offering_id: str | None = None,
    iops: Iops | None = None,
) -> MigrationResult:
    """Move a volume from one StorPool pool to another (see the module docstring)."""
    src = pools.resolve(ctx, source_pool)
    dst = pools.resolve(ctx, target_pool)
    uuid = check_uuid(volume_uuid, "volume_uuid")
    offerings.check_volume_type(volume_type)
    offerings.check_iops(iops, "iops")
    if pools.cluster_key(src) != pools.cluster_key(dst):
        raise ValidationError("target_pool", f"{dst.name} is on another StorPool cluster than {src.name}; "
                                             "moving data between clusters is not supported")
    conn = ctx.conn(src)
    source = conn.volume(identity.ref(volume_uuid=uuid, path=path))
    if source is None:
        return _resume(ctx, src, dst, uuid, path)
    if dst.uuid and source.tags.get(tags.POOL) == dst.key and src.uuid != dst.uuid:
        log.info("volume %s is already on pool %s (a repeated migration)", source.name, dst.name)
        return MigrationResult(DONE, src.uuid, dst.uuid, identity.info(source, dst))
    placement = _placement(ctx, dst, source, volume_type=volume_type, disk_offering_id=disk_offering_id,
                           service_offering_id=service_offering_id, iops=iops)
    carried = {**source.tags, tags.POOL: dst.key, tags.QOS_CLASS: placement.qos_class or ""}
    running = _vm_running(ctx, uuid) if vm_running is None else vm_running
    if running:
        conn.volume_update(source.ref, template=placement.template,
                           iops=offerings.explicit_iops(ctx, dst, placement), tags=carried)
        return MigrationResult(IN_PLACE, src.uuid, dst.uuid, identity.get(ctx, dst, path=source.path))
    clone = _clone_then_swap(ctx, conn, dst, uuid, source, placement, carried)
    return MigrationResult(CLONE, src.uuid, dst.uuid, identity.get(ctx, dst, path=clone.path))


def _clone_then_swap(ctx: DriverContext, conn: StorPoolConn, dst: PoolSpec, uuid: str, source: Any,
                     placement: Placement, carried: dict[str, str]) -> Created:
    """A stopped or detached volume: `baseOn` clone named `naming.migrating(uuid)` (replacing one
    an interrupted attempt left), delete the source, rename the clone to the volume's name."""
    clone_name = naming.migrating(uuid)
    stale = conn.volume(clone_name)
    if stale is not None:
        log.warning("removing %s left by an interrupted migration (the source is still there)", clone_name)
        conn.volume_delete(stale.ref)
    create_tags = {k: v for k, v in carried.items() if v}
    clone = conn.volume_create(name=clone_name, base_on=source.ref, template=placement.template,
                               iops=offerings.explicit_iops(ctx, dst, placement), tags=create_tags)
    try:
        conn.volume_delete(source.ref, on_attached="detachForce")
    except ProjectError:
        conn.volume_delete(clone.ref)
        raise
    conn.volume_update(clone.ref, rename=naming.volume(uuid))
    return clone


def _resume(ctx: DriverContext, src: PoolSpec, dst: PoolSpec, uuid: str, path: str | None) -> MigrationResult:
    """The source is gone: an earlier attempt deleted it. Finish the rename, or report done."""
    conn = ctx.conn(src)
    clone = conn.volume(naming.migrating(uuid))
    if clone is not None:
        try:
            conn.volume_update(clone.ref, rename=naming.volume(uuid))
        except SpExists:
            raise ValidationError("volume_uuid", f"both {naming.migrating(uuid)} and {naming.volume(uuid)} exist; "
                                                 "resolve by hand") from None
        return MigrationResult(CLONE, src.uuid, dst.uuid, identity.get(ctx, dst, path=clone.path))
    done = conn.volume(naming.volume(uuid))
    if done is not None and done.tags.get(tags.POOL) == dst.key:
        return MigrationResult(CLONE, src.uuid, dst.uuid, identity.info(done, dst))
    raise NotFound(f"volume: {path or uuid} does not exist on pool {src.name}")


def import_volume(
    ctx: DriverContext,
    target_pool: PoolSpec | str,
    volume_uuid: Uuid,
    source: TemplateSource,
    *,
    size: int,
    volume_type: str = offerings.DATADISK,
    disk_offering_id: str | None = None,
    service_offering_id: str | None = None,
    iops: Iops | None = None,
) -> MigrationResult:
    """From a non-StorPool pool (an image CloudStack put on secondary storage): create the
    volume, then an agent copies the image into it. A failed copy deletes the volume again."""
    dst = pools.resolve(ctx, target_pool)
    created = volumes.create(ctx, dst, volume_uuid, size, volume_type=volume_type,
                             disk_offering_id=disk_offering_id, service_offering_id=service_offering_id, iops=iops)
    timeout = copy_timeout(ctx)
    try:
        with agent_refusals("source"):
            ctx.agents.run_on_pool(dst, lambda agent: agent.copy_to_volume(
                store=source.store, path=source.path, volume=created.path, source_format=source.agent_format,
                target_is_zero=True, timeout=timeout,
                idempotency_key=f"import-{created.global_id}", progress=ctx.progress,
            ))
    except BaseException:
        ctx.conn(dst).volume_delete("~" + created.global_id)
        raise
    return MigrationResult(COPY, None, dst.uuid, identity.get(ctx, dst, path=created.path))
