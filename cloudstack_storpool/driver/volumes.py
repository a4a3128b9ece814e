"""Volumes: create (empty or from a cached template), delete, change of offering, and the
attach/detach bookkeeping tags.

Identity (`identity.py`): a volume is named `naming.volume(<CloudStack uuid>)` and tagged
`uuid`, `cs=volume`, `pool`; CloudStack stores its path `/dev/storpool-byid/<globalId>`, which
survives renames (migration). Every operation accepts either; the path wins when both are
given. A create retried with the same uuid returns the volume the first attempt made.

Costs (StorPool calls, management side): empty volume 1; root volume from a cached template 1;
delete 1 (2 with a delay-delete backup); attach/detach tags 1.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cloudstack_storpool import names
from cloudstack_storpool.bounds import Iops
from cloudstack_storpool.driver import identity, locate, naming, offerings, pools, spclusters, tags, templates
from cloudstack_storpool.driver.identity import VolumeInfo, ref, volume_tags
from cloudstack_storpool.driver.offerings import Placement
from cloudstack_storpool.errors import Conflict, NotFound, SpExists, SpNotFound, ValidationError
from cloudstack_storpool.poolconfig import PoolSpec
from cloudstack_storpool.spconn import Created, StorPoolConn
from cloudstack_storpool.uuids import check_uuid

if TYPE_CHECKING:
    from cloudstack_storpool.driver.context import DriverContext
    from cloudstack_storpool.driver.templates import TemplateSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeleteResult:
    uuid: str
    deleted: bool
    """False when the volume was already gone (success for CloudStack)."""
    backup: str | None = None
    """The delay-delete snapshot kept for `storpool.delete.after.interval` seconds, if any."""


# ---------------------------------------------------------------------- helpers


def vm_tags_for(ctx: DriverContext, vm_id: str, device_id: int | None) -> dict[str, str]:
    """The tags a volume attached to `vm_id` as disk `device_id` carries: `cvm`, `disk` and
    `vc-policy` (the VM's resource tag; empty value = removed)."""
    vm = ctx.cloudstack.vm(vm_id)
    if vm is None:
        raise ValidationError("vm_id", f"CloudStack has no VM {vm_id}")
    out = {tags.VM: vm.id, tags.DISK: "" if device_id is None else str(device_id),
           tags.VC_POLICY: vm.tags.get(tags.VC_POLICY, "")}
    return names.tags(out, "vm.tags")


def _existing(conn: StorPoolConn, spec: PoolSpec, name: str, volume_uuid: str) -> VolumeInfo:
    """A create met `objectExists`: it is ours (a retry) only if it carries our uuid."""
    found = identity.existing_volume(conn, name, volume_uuid)
    log.info("volume %s already exists (a retried create): returning it", name)
    return identity.info(found, spec)


def _created(created: Created, spec: PoolSpec, volume_uuid: str, size: int | None, placement: Placement,
             vtags: dict[str, str]) -> VolumeInfo:
    return VolumeInfo(
        uuid=volume_uuid, pool=spec.uuid, name=created.name, global_id=created.global_id, path=created.path,
        size=size, template=placement.template, iops=placement.iops, qos_class=placement.qos_class, tags=vtags,
    )


# ---------------------------------------------------------------------- create


def create(
    ctx: DriverContext,
    pool: PoolSpec | str,
    volume_uuid: str,
    size: int,
    *,
    volume_type: str = offerings.DATADISK,
    disk_offering_id: str | None = None,
    service_offering_id: str | None = None,
    iops: Iops | None = None,
    encrypted: bool = False,
    cluster_id: str | None = None,
) -> VolumeInfo:
    """An empty volume: one VolumeCreate (template, iops and tags from the offerings).

    `cluster_id` is the CloudStack cluster the volume is for (its VM's hosts): the volume is
    made in that cluster's StorPool cluster (`spclusters.target`), so its VM's hosts have it
    locally."""
    spec = pools.resolve(ctx, pool)
    name = naming.volume(volume_uuid)
    uuid = check_uuid(volume_uuid, "volume_uuid")
    names.size(size)
    real_size = size + offerings.ENCRYPTION_OVERHEAD if encrypted else size
    placement = offerings.resolve(ctx, spec, volume_type=volume_type, disk_offering_id=disk_offering_id,
                                  service_offering_id=service_offering_id, custom_iops=iops, size=real_size)
    vtags = volume_tags(uuid, spec, placement)
    where = spclusters.target(ctx, spec, cluster_id)
    try:
        created = where.conn.volume_create(name=name, size=real_size, tags=vtags,
                                           **where.create_args(placement.create_args()))
    except SpExists:
        return _existing(where.conn, spec, name, uuid)
    return _created(created, spec, uuid, real_size, placement, vtags)


def create_from_template(
    ctx: DriverContext,
    pool: PoolSpec | str,
    volume_uuid: str,
    template_uuid: str,
    *,
    size: int | None = None,
    source: TemplateSource | None = None,
    volume_type: str = offerings.ROOT,
    disk_offering_id: str | None = None,
    service_offering_id: str | None = None,
    iops: Iops | None = None,
    cluster_id: str | None = None,
) -> VolumeInfo:
    """A (root) volume from a template: one VolumeCreate with `parent` = the pool's cached
    template. When the cache is missing (first use, or deleted out of band) it is filled from
    `source` (the template's image on secondary storage) and the create is repeated.

    `cluster_id` (the CloudStack cluster of the VM) picks the StorPool cluster as for `create`;
    in a cluster other than the pool's own, the pool has a cache of its own there."""
    spec = pools.resolve(ctx, pool)
    name = naming.volume(volume_uuid)
    uuid = check_uuid(volume_uuid, "volume_uuid")
    tuuid = check_uuid(template_uuid, "template_uuid")
    if size is not None:
        names.size(size)
    template = ctx.cloudstack.template(tuuid)
    if template is None:
        raise ValidationError("template_uuid", f"CloudStack has no template {tuuid}")
    if size is not None and template.size and size < template.size:
        raise ValidationError("size", f"{size} bytes is smaller than the template's virtual size {template.size}")
    placement = offerings.resolve(ctx, spec, volume_type=volume_type, disk_offering_id=disk_offering_id,
                                  service_offering_id=service_offering_id, custom_iops=iops,
                                  size=size or template.size)
    vtags = volume_tags(uuid, spec, placement)
    where = spclusters.target(ctx, spec, cluster_id)
    cache = parent = templates.cache_name(tuuid, spec, where)
    conn = where.conn
    args = where.create_args(placement.create_args())
    for _attempt in range(3):
        try:
            created = conn.volume_create(name=name, parent=parent, size=size, tags=vtags, **args)
            return _created(created, spec, uuid, size, placement, vtags)
        except SpExists:
            return _existing(conn, spec, name, uuid)
        except SpNotFound as exc:
            about_cache = parent in exc.descr
            if not about_cache and args["template"] in exc.descr:
                raise ValidationError("template", f"StorPool refused the volume: {exc.descr}") from None
            java = (locate.java_template_cache(conn, spec, tuuid)
                    if about_cache and parent == cache and where.home else None)
            if java is not None:
                log.info("template %s is cached on pool %s by the Java plugin (%s): using it", tuuid, spec.name, java.ref)
                parent = java.ref
                continue
            log.info("template %s is not cached on pool %s: filling", tuuid, spec.name)
            parent = templates.ensure_cached(ctx, spec, tuuid, source=source, size=template.size,
                                             known_missing=about_cache, cluster_id=cluster_id).name
    raise Conflict(f"the cached template {cache} keeps disappearing; giving up")


# ---------------------------------------------------------------------- delete


def _delete_after(ctx: DriverContext, spec: PoolSpec) -> int:
    value = ctx.settings.get("storpool.delete.after.interval", pool=spec.uuid or None)
    return int(value) if isinstance(value, int) and value > 0 else 0


def delete(ctx: DriverContext, pool: PoolSpec | str, volume_uuid: str, *, path: str | None = None) -> DeleteResult:
    """VolumeDelete `onAttached=detachForce`; a missing volume is success. With
    `storpool.delete.after.interval` > 0 (pool scope) a snapshot tagged `cs=delayDelete` with
    `deleteAfter` is taken first, so the data can be recovered for that long."""
    spec = pools.resolve(ctx, pool)
    uuid = check_uuid(volume_uuid, "volume_uuid")
    target = ref(volume_uuid=uuid, path=path)
    conn = ctx.conn(spec)
    backup: str | None = None
    keep = _delete_after(ctx, spec)
    if keep:
        try:
            snap = conn.snapshot_create(
                target, name=naming.delay_delete(uuid, int(ctx.clock() * 1000)), delete_after=keep,
                tags=pools.identity_tags(uuid, tags.DELAY_DELETE, spec),
            )
            backup = snap.name
        except SpNotFound:
            return DeleteResult(uuid, False)
    deleted = conn.volume_delete(target, on_attached="detachForce")
    return DeleteResult(uuid, deleted, backup)


# ---------------------------------------------------------------------- change of offering


def change_offering(
    ctx: DriverContext,
    pool: PoolSpec | str,
    volume_uuid: str,
    *,
    path: str | None = None,
    volume_type: str = offerings.DATADISK,
    disk_offering_id: str | None = None,
    service_offering_id: str | None = None,
    iops: Iops | None = None,
) -> VolumeInfo:
    """Re-apply template, `qc` and iops of the (new) offerings to an existing volume."""
    spec = pools.resolve(ctx, pool)
    uuid = check_uuid(volume_uuid, "volume_uuid")
    target = ref(volume_uuid=uuid, path=path)
    placement = offerings.resolve(ctx, spec, volume_type=volume_type, disk_offering_id=disk_offering_id,
                                  service_offering_id=service_offering_id, custom_iops=iops)
    try:
        offerings.apply(ctx, spec, target, placement)
    except SpNotFound:
        raise NotFound(f"volume: {path or uuid} does not exist on pool {spec.name}") from None
    return identity.get(ctx, spec, volume_uuid=uuid, path=path)


# ---------------------------------------------------------------------- attach bookkeeping


def _update_tags(ctx: DriverContext, spec: PoolSpec, target: str, new: dict[str, str], what: str) -> None:
    try:
        ctx.conn(spec).volume_update(target, tags=new)
    except SpNotFound:
        raise NotFound(f"volume: {what} does not exist on pool {spec.name}") from None


def attached(ctx: DriverContext, pool: PoolSpec | str, volume_uuid: str, *, vm_id: str, device_id: int,
             path: str | None = None) -> dict[str, str]:
    """CloudStack attached the volume to `vm_id` as disk `device_id`: tag `cvm`, `disk` and the
    VM's `vc-policy`. Returns the tags written."""
    spec = pools.resolve(ctx, pool)
    if isinstance(device_id, bool) or not isinstance(device_id, int) or device_id < 0:
        raise ValidationError("device_id", f"must be a non-negative integer, got {device_id!r}")
    target = ref(volume_uuid=volume_uuid, path=path)
    new = vm_tags_for(ctx, vm_id, device_id)
    _update_tags(ctx, spec, target, new, path or volume_uuid)
    return new


def detached(ctx: DriverContext, pool: PoolSpec | str, volume_uuid: str, *, path: str | None = None) -> bool:
    """CloudStack detached the volume: remove `cvm`, `disk`, `vc-policy`. False if it is gone."""
    spec = pools.resolve(ctx, pool)
    target = ref(volume_uuid=volume_uuid, path=path)
    try:
        ctx.conn(spec).volume_update(target, tags=tags.cleared(*tags.VM_TAGS))
    except SpNotFound:
        return False
    return True


def vm_volumes(ctx: DriverContext, vm_id: str) -> list[tuple[PoolSpec, Any]]:
    """Every StorPool volume tagged as attached to `vm_id`, on every cluster (one list each)."""
    out: list[tuple[PoolSpec, Any]] = []
    for spec, *_ in pools.by_cluster(ctx):
        out.extend((spec, v) for v in ctx.conn(spec).find_volumes({tags.VM: vm_id}))
    return out


def vm_tags_changed(ctx: DriverContext, vm_id: str, *, vc_policy: str | None = None) -> list[str]:
    """The VM's resource tags changed: propagate `vc-policy` to all of its volumes (set, changed
    or removed). Returns the names of the volumes updated.

    `vc_policy` is the VM's `vc-policy` tag after the change ("" once removed), as the
    management server hands it over: CloudStack calls the driver (provideVmTags) inside the
    transaction that writes the tag, so listVirtualMachines shows the change only after the
    call returns. None (a caller outside the management server): read it from CloudStack."""
    vm_id = check_uuid(vm_id, "vm_id")
    if vc_policy is None:
        vm = ctx.cloudstack.vm(vm_id)
        if vm is None:
            raise ValidationError("vm_id", f"CloudStack has no VM {vm_id}")
        policy = names.tags({tags.VC_POLICY: vm.tags.get(tags.VC_POLICY, "")}, "vm.tags")[tags.VC_POLICY]
    else:
        try:
            policy = names.tags({tags.VC_POLICY: vc_policy})[tags.VC_POLICY]
        except ValidationError as exc:
            raise ValidationError("vc_policy", exc.message) from None
    updated = []
    for spec, v in vm_volumes(ctx, vm_id):
        if v.tags.get(tags.VC_POLICY, "") != policy:
            ctx.conn(spec).volume_update(v.ref, tags={tags.VC_POLICY: policy})
            updated.append(v.name)
    return updated


def vm_destroyed(ctx: DriverContext, vm_id: str) -> list[str]:
    """The VM is gone: its volumes (data disks that survive it) lose `cvm`, `disk`, `vc-policy`."""
    if not isinstance(vm_id, str) or not vm_id:
        raise ValidationError("vm_id", "is required")
    vm_id = check_uuid(vm_id, "vm_id")  # the `cvm` tags hold CloudStack's (canonical) uuid
    cleared = []
    for spec, v in vm_volumes(ctx, vm_id):
        try:
            ctx.conn(spec).volume_update(v.ref, tags=tags.cleared(*tags.VM_TAGS))
        except SpNotFound:
            continue
        cleared.append(v.name)
    return cleared
