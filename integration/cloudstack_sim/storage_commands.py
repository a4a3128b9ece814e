"""Users' storage commands: what a CloudStack user (or CloudStack's own integration tests) sends,
with CloudStack's command and parameter names, answered as CloudStack answers them.

Each handler checks its parameters first (a bad one is 431 before anything changes, as the
API layer's parameter translation and the command's own checks are), then runs the work as an
async job: the simulator's records change and, where the management server's storage
subsystem would call the primary-storage driver, the plugin is called through
`orchestrator.py`, which documents which CloudStack class makes each call and in which order.
A plugin failure fails the job with errorcode 530 and the plugin's text, as CloudStack
reports a `CloudRuntimeException` from a driver callback.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from integration.cloudstack_sim import callers, file_pools
from integration.cloudstack_sim import model as m
from integration.cloudstack_sim import orchestrator as orch
from integration.cloudstack_sim import params as params_mod

log = logging.getLogger(__name__)

Params = Mapping[str, str]
Item = dict[str, Any]
GIB = 1024**3


def _wire() -> ModuleType:
    """server.py (renderers); imported late because server.py registers these commands."""
    return importlib.import_module("integration.cloudstack_sim.server")


# ---------------------------------------------------------------------------- parameters


def _required(cmd: str, p: Params, *names: str) -> None:
    _wire()._required(cmd, p, *names)


_need = params_mod.need


def _opt_need(table: Mapping[str, Any], p: Params, name: str) -> Any:
    return _need(table, p, name) if p.get(name) else None


def _long(p: Params, name: str) -> int | None:
    """A LONG parameter (sizes, capacities, IOPS): Long.parseLong's range."""
    return params_mod.int_param(p, name, 64)


def _flag(p: Params, name: str, default: bool = False) -> bool:
    return default if not p.get(name) else bool(_wire()._flag(p, name))


def _tags_param(p: Params) -> dict[str, str]:
    """`tags[0].key=k&tags[0].value=v`, as the `cs` client spells a list of maps."""
    found: dict[str, str] = _wire()._tag_filters(p)
    return found


# ---------------------------------------------------------------------------- async jobs


def _async(model: m.CloudStackModel, command: str, work: Callable[[], Item], *, instance_type: str | None = None,
           instance_id: str | None = None, create: bool = False) -> Item:
    """Queue `work` as an async job (AsyncJobManagerImpl): the answer is the job id at once, the
    outcome shows through queryAsyncJobResult. The work runs on its own thread, outside the
    model's lock, because the plugin calls back into this API while it works. Only a command
    that creates something (a BaseAsyncCreateCmd) answers the new object's `id` beside `jobid`
    (ApiServer.queueCommand: getBaseAsyncCreateResponse / getBaseAsyncResponse)."""
    now = time.time()
    job = m.Job(m.new_id(), command, now, float("inf"), 0, 0, {}, instance_type, instance_id)
    model.jobs[job.id] = job

    def run() -> None:
        status, code = 1, 0
        try:
            result = work()
        except m.ApiError as exc:
            # ApiAsyncJobDispatcher: an ExceptionResponse with 431 for a bad parameter, 530 for
            # anything else (a plugin failure included), and no cserrorcode.
            status, code = 2, 431 if exc.code == 431 else 530
            result = {"errorcode": code, "errortext": exc.text}
        except Exception as exc:
            log.exception("%s job failed", command)
            status, code = 2, 530
            result = {"errorcode": 530, "errortext": f"{command} failed: {type(exc).__name__}"}
        with model.lock:
            job.status, job.result_code, job.result = status, code, result
            job.ready_at = time.time() + model.job_delay
            model.save()

    threading.Thread(target=run, name=f"cs-job-{command}", daemon=True).start()
    out: Item = {"jobid": job.id}
    if create and instance_id:
        out["id"] = instance_id
    return out


def _job(model: m.CloudStackModel, command: str, instance_type: str, instance_id: str, action: Callable[[], object],
         answer: Callable[[], Item], *, create: bool = False) -> Item:
    """The common shape: one orchestrator action on one record, then that record as the answer."""

    def work() -> Item:
        action()
        return answer()

    return _async(model, command, work, instance_type=instance_type, instance_id=instance_id, create=create)


def _render(model: m.CloudStackModel, key: str, renderer: str, table: Mapping[str, Any],
            obj_id: str) -> Callable[[], Item]:
    """The answer of a job: the record as it is when the job ends, rendered by server.py."""

    def answer() -> Item:
        with model.lock:
            return {key: getattr(_wire(), renderer)(model, table[obj_id])}

    return answer


def _vm_item(model: m.CloudStackModel, vm_id: str) -> Item:
    return _render(model, "virtualmachine", "_vm", model.vms, vm_id)()


def _volume_item(model: m.CloudStackModel, volume_id: str) -> Item:
    return _render(model, "volume", "_volume", model.volumes, volume_id)()


def _success() -> Item:
    return {"success": True}


# ---------------------------------------------------------------------------- storage pools


def create_storage_pool(model: m.CloudStackModel, p: Params) -> Item:
    """Synchronous, as CreateStoragePoolCmd is."""
    _required("createStoragePool", p, "name", "url", "zoneid")
    _need(model.zones, p, "zoneid")
    provider = p.get("provider") or file_pools.DEFAULT_PROVIDER
    other_kind = file_pools.parse_url(p["url"])
    if provider != ("StorPool" if other_kind is None else file_pools.DEFAULT_PROVIDER):
        raise m.ParamError(f"Unable to find the storage provider {provider} among the ones this simulator serves "
                           "(StorPool, and DefaultPrimary for nfs:// and rbd:// URLs)")
    with model.lock:
        if any(x.name == p["name"] for x in model.storage_pools.values()):
            raise m.ParamError(f"Storage pool with name {p['name']} already exists")
    if other_kind is not None:
        pool = orch.create_file_pool(model, p["name"], p["url"], p["zoneid"], p.get("tags", ""),
                                     _long(p, "capacitybytes"))
        with model.lock:
            return {"storagepool": _wire()._pool(model, pool)}
    pool = orch.create_storage_pool(model, p["name"], p["url"], p["zoneid"], p.get("tags", ""),
                                    _long(p, "capacitybytes"))
    with model.lock:
        return {"storagepool": _wire()._pool(model, pool)}


def delete_storage_pool(model: m.CloudStackModel, p: Params) -> Item:
    _required("deleteStoragePool", p, "id")
    pool = _need(model.storage_pools, p, "id")
    with model.lock:
        users = [v.name for v in model.volumes.values() if v.storage_id == pool.id]
    if users and not _flag(p, "forced"):
        raise m.ApiError(f"Cannot delete pool {pool.name} as there are associated non-destroyed vols for this pool")
    orch.delete_storage_pool(model, pool)
    return _success()


# ---------------------------------------------------------------------------- VMs


def deploy_vm(model: m.CloudStackModel, p: Params) -> Item:
    """DeployVMCmd: a VM from a template, or (CloudStack 4.21, KVM) from an existing volume or a
    snapshot (`_deploy_source`); exactly one of `templateid`, `volumeid`, `snapshotid`."""
    _required("deployVirtualMachine", p, "serviceofferingid", "zoneid")
    zone = _need(model.zones, p, "zoneid")
    offering = _need(model.service_offerings, p, "serviceofferingid")
    given = [name for name in ("templateid", "volumeid", "snapshotid") if p.get(name)]
    if len(given) != 1:
        raise m.ApiError("Please provide only one of the following parameters - template ID, volume ID or snapshot ID")
    source_volume, source_snapshot = _deploy_source(model, p, zone.id)
    tpl = (_need(model.templates, p, "templateid") if p.get("templateid")
           else _source_template(model, source_volume, source_snapshot))
    disk_offering = _opt_need(model.disk_offerings, p, "diskofferingid")
    root_offering = _opt_need(model.disk_offerings, p, "overridediskofferingid")
    host = _opt_need(model.hosts, p, "hostid")
    owner = params_mod.owner_of(model, p)
    # The `details` map's rootdisksize, else `rootdisksize` (DeployVMCmd: the map's takes precedence).
    root_gb = params_mod.int_param(params_mod.details_param(p, "details"), "rootdisksize", 64)
    if root_gb is None:
        root_gb = _long(p, "rootdisksize")
    if root_gb is not None and root_gb * GIB < tpl.size:
        raise m.ParamError(f"Root disk size {root_gb} GB is smaller than the template size")
    data_gb = _long(p, "size")
    if disk_offering is not None and not disk_offering.disk_size_gb and not data_gb:
        raise m.ParamError("A custom disk offering needs a size")
    vm = orch.allocate_vm(model, p.get("name") or p.get("displayname") or "", tpl, offering,
                          root_size=root_gb * GIB if root_gb else None, disk_offering=disk_offering,
                          data_size=data_gb * GIB if data_gb else None, account=owner, root_offering=root_offering,
                          root_volume=source_volume, root_snapshot=source_snapshot)
    start = _flag(p, "startvm", True)

    def action() -> None:
        if source_volume is not None:
            orch.root_adopted(model, vm.id)
        if start:  # startvm=false: records only, the volumes are created on the first start
            orch.start_vm(model, vm.id, host.id if host else None)

    return _job(model, "deployVirtualMachine", "VirtualMachine", vm.id, action, lambda: _vm_item(model, vm.id),
                create=True)


def _deploy_source(model: m.CloudStackModel, p: Params,
                   zone_id: str) -> tuple[m.Volume | None, m.Snapshot | None]:
    """The volume or snapshot a VM is deployed from, checked as UserVmManagerImpl.createVirtualMachine
    checks it (CloudStack 4.21): a volume on zone-wide primary storage, in the VM's zone, attached
    to no VM, made from a template (a ROOT volume, or a volume from a ROOT volume's snapshot); a
    snapshot with a copy in the VM's zone, whose volume was made from a template. (The caller is
    the admin, whom AccountManager.checkAccess lets use any account's volume or snapshot.)"""
    with model.lock:
        if p.get("volumeid"):
            vol: m.Volume = _need(model.volumes, p, "volumeid")
            _usable_source(model, vol)
            if vol.vm_id:
                raise m.ParamError(f"The volume {vol.name} is already attached to a VM {vol.vm_id}")
            if vol.zone_id != zone_id:
                raise m.ParamError(f"The volume's zone [{vol.zone_id}] is not the same as the provided zone [{zone_id}]")
            return vol, None
        if p.get("snapshotid"):
            snap: m.Snapshot = _need(model.snapshots, p, "snapshotid")
            src = model.volumes.get(snap.volume_id)
            if src is None:  # the simulator keeps no record of a deleted volume's template
                raise m.ParamError("The provided volume/snapshot doesn't have a template to deploy a VM")
            _usable_source(model, src)
            home = model.storage_pools.get(snap.storage_id or "")
            on_primary = home is not None and home.zone_id == zone_id and snap.path
            on_store = snap.backup_path and snap.zone_id == zone_id
            if not (on_primary or on_store or orch.copy_in_zone(model, snap, zone_id)):
                raise m.ParamError(f"The snapshot does not exist on zone {zone_id}")
            return None, snap
    return None, None


def _usable_source(model: m.CloudStackModel, vol: m.Volume) -> None:
    """UserVmManagerImpl.getVolume's checks, in its order, for a volume or a snapshot's volume."""
    pool = model.storage_pools.get(vol.storage_id or "")
    if pool is None or pool.scope != "ZONE" or vol.state != "Ready":
        raise m.ParamError("Deployment of virtual machine is supported only for Zone-wide storage pools")
    if not vol.template_id:
        raise m.ParamError("The provided volume/snapshot doesn't have a template to deploy a VM")


def _source_template(model: m.CloudStackModel, vol: m.Volume | None, snap: m.Snapshot | None) -> m.Template:
    """The template of the source volume (for a snapshot, of its volume): the VM's template.
    CloudStack looks it up including removed templates; the simulator keeps no deleted template,
    so a VM whose source's template is gone is refused with CloudStack's text for a missing one."""
    with model.lock:
        src = vol if vol is not None else model.volumes.get(snap.volume_id) if snap is not None else None
        template_id = src.template_id if src is not None else None
        tpl = model.templates.get(template_id or "")
    if tpl is None:
        raise m.ParamError(f"Unable to use template {template_id}")
    return tpl


def start_vm(model: m.CloudStackModel, p: Params) -> Item:
    _required("startVirtualMachine", p, "id")
    vm = _need(model.vms, p, "id")
    host = _opt_need(model.hosts, p, "hostid")
    if vm.state == "Running":
        raise m.ParamError(f"VM {vm.name} is already running")
    return _job(model, "startVirtualMachine", "VirtualMachine", vm.id,
                lambda: orch.start_vm(model, vm.id, host.id if host else None), lambda: _vm_item(model, vm.id))


def stop_vm(model: m.CloudStackModel, p: Params) -> Item:
    _required("stopVirtualMachine", p, "id")
    vm = _need(model.vms, p, "id")
    return _job(model, "stopVirtualMachine", "VirtualMachine", vm.id,
                lambda: orch.stop_vm(model, vm.id), lambda: _vm_item(model, vm.id))


def reboot_vm(model: m.CloudStackModel, p: Params) -> Item:
    _required("rebootVirtualMachine", p, "id")
    vm = _need(model.vms, p, "id")
    if vm.state != "Running":
        raise m.ParamError(f"Unable to reboot VM {vm.name}: it is {vm.state}")
    return _job(model, "rebootVirtualMachine", "VirtualMachine", vm.id,
                lambda: orch.reboot_vm(model, vm.id), lambda: _vm_item(model, vm.id))


def migrate_vm(model: m.CloudStackModel, p: Params) -> Item:
    _required("migrateVirtualMachine", p, "virtualmachineid")
    vm = _need(model.vms, p, "virtualmachineid")
    host = _opt_need(model.hosts, p, "hostid")
    if vm.state == "Running" and host is None:
        raise m.ParamError("hostid is required to migrate a running VM")
    if host is not None and host.id == vm.host_id:
        raise m.ParamError(f"VM {vm.name} is already on host {host.name}")
    pool = _opt_need(model.storage_pools, p, "storageid")

    def work() -> Item:
        if host is not None:
            orch.migrate_vm(model, vm.id, host.id)
        if pool is not None:
            for vol in orch.vm_volumes(model, vm.id):
                orch.migrate_volume(model, vol.id, pool.id)
        return _vm_item(model, vm.id)

    return _async(model, "migrateVirtualMachine", work, instance_type="VirtualMachine", instance_id=vm.id)


def destroy_vm(model: m.CloudStackModel, p: Params) -> Item:
    _required("destroyVirtualMachine", p, "id")
    vm = _need(model.vms, p, "id")
    expunge = _flag(p, "expunge")

    def work() -> Item:
        out = _vm_item(model, vm.id)
        orch.destroy_vm(model, vm.id, expunge=expunge)
        out["virtualmachine"]["state"] = "Expunging" if expunge else "Destroyed"
        return out

    return _async(model, "destroyVirtualMachine", work, instance_type="VirtualMachine", instance_id=vm.id)


def expunge_vm(model: m.CloudStackModel, p: Params) -> Item:
    _required("expungeVirtualMachine", p, "id")
    vm = _need(model.vms, p, "id")
    if vm.state != "Destroyed":
        raise m.ParamError(f"Please specify a VM that is in Destroyed state; {vm.name} is {vm.state}")
    return _job(model, "expungeVirtualMachine", "VirtualMachine", vm.id,
                lambda: orch.destroy_vm(model, vm.id, expunge=True), _success)


# ---------------------------------------------------------------------------- tags


def create_tags(model: m.CloudStackModel, p: Params) -> Item:
    return _tags(model, p, "createTags", remove=False)


def delete_tags(model: m.CloudStackModel, p: Params) -> Item:
    return _tags(model, p, "deleteTags", remove=True)


def _tags(model: m.CloudStackModel, p: Params, cmd: str, *, remove: bool) -> Item:
    _required(cmd, p, "resourceids", "resourcetype")
    if not remove and not _tags_param(p):
        raise m.MissingParam(f"Unable to execute API command {cmd.lower()} due to missing parameter tags")
    if p["resourcetype"].lower() not in ("uservm", "virtualmachine"):
        raise m.ParamError(f"Tags on {p['resourcetype']} are not served by this simulator (UserVm only)")
    vm_ids = [x.strip() for x in p["resourceids"].split(",") if x.strip()]
    for vid in vm_ids:
        if vid not in model.vms:
            raise m.no_entity("resourceids", vid)
    wanted = _tags_param(p)

    def work() -> Item:
        for vid in vm_ids:
            orch.change_vm_tags(model, vid, wanted, remove=remove)
        return _success()

    return _async(model, cmd, work)


# ---------------------------------------------------------------------------- volumes


def create_volume(model: m.CloudStackModel, p: Params) -> Item:
    snapshot = _opt_need(model.snapshots, p, "snapshotid")
    offering = _opt_need(model.disk_offerings, p, "diskofferingid")
    if snapshot is None and offering is None:
        raise m.ParamError("Either disk Offering Id or snapshot Id must be passed whilst creating volume")
    zone = p.get("zoneid") or (snapshot.zone_id if snapshot else "")
    if snapshot is None:
        _need(model.zones, {"zoneid": zone}, "zoneid")
    vm = _opt_need(model.vms, p, "virtualmachineid")
    pool = _opt_need(model.storage_pools, p, "storageid")
    size_gb = _long(p, "size")
    if offering is not None and snapshot is None:
        if offering.disk_size_gb and size_gb and not offering.customized:
            raise m.ParamError("This disk offering has a fixed size; size cannot be given")
        if not offering.disk_size_gb and not size_gb:
            raise m.ParamError("This disk offering requires a custom size")
    if p.get("miniops") or p.get("maxiops"):
        if offering is None or not offering.customized_iops:
            raise m.ParamError("Custom IOPS can only be given with a disk offering that has customized IOPS")
    # CreateVolumeCmd.getEntityOwnerId: `account` if given, else the caller (an admin's volume
    # from a snapshot stays with the snapshot's account here, as the stack's own tests expect).
    if p.get("account") or not callers.current().is_root_admin:
        owner = params_mod.owner_of(model, p)
    else:
        owner = snapshot.account if snapshot else "admin"
    vol = orch.allocate_volume(
        model, p.get("name") or "", zone, offering=offering, size=size_gb * GIB if size_gb else None,
        snapshot=snapshot, min_iops=_long(p, "miniops"), max_iops=_long(p, "maxiops"), account=owner,
    )

    def work() -> Item:
        try:
            if snapshot is not None:
                orch.create_volume_from_snapshot(model, vol.id, snapshot.id)
            elif pool is not None:
                orch.create_volume_on_pool(model, vol.id, pool.id)
            if vm is not None:
                orch.attach_volume(model, vol.id, vm.id, None)
        except m.ApiError:
            if snapshot is not None:
                # VolumeApiServiceImpl: a failed creation from a snapshot leaves no volume behind.
                with model.lock:
                    model.volumes.pop(vol.id, None)
            raise
        return _volume_item(model, vol.id)

    return _async(model, "createVolume", work, instance_type="Volume", instance_id=vol.id, create=True)


def attach_volume(model: m.CloudStackModel, p: Params) -> Item:
    _required("attachVolume", p, "id", "virtualmachineid")
    vol = _need(model.volumes, p, "id")
    vm = _need(model.vms, p, "virtualmachineid")
    device = _long(p, "deviceid")
    if vol.vm_id:
        raise m.ParamError(f"Please specify a volume that is not attached to any VM; {vol.name} is attached")
    if vol.type == "ROOT":
        raise m.ParamError("Please specify a volume with the valid type: DATADISK")
    if vm.state not in ("Running", "Stopped"):
        raise m.ParamError(f"Please specify a VM that is either running or stopped; {vm.name} is {vm.state}")
    return _job(model, "attachVolume", "Volume", vol.id,
                lambda: orch.attach_volume(model, vol.id, vm.id, device), lambda: _volume_item(model, vol.id))


def detach_volume(model: m.CloudStackModel, p: Params) -> Item:
    if p.get("id"):
        vol = _need(model.volumes, p, "id")
    else:
        _required("detachVolume", p, "virtualmachineid", "deviceid")
        vm = _need(model.vms, p, "virtualmachineid")
        device = _long(p, "deviceid")
        found = [v for v in model.volumes.values() if v.vm_id == vm.id and v.device_id == device]
        if not found:
            raise m.ParamError("Unable to find volume with ID: null")
        vol = found[0]
    if not vol.vm_id:
        raise m.ParamError("Please specify a volume that is attached to a VM.")
    if vol.type == "ROOT":
        raise m.ParamError("Please specify a data volume.")
    return _job(model, "detachVolume", "Volume", vol.id,
                lambda: orch.detach_volume(model, vol.id), lambda: _volume_item(model, vol.id))


def _new_size(vol: m.Volume, offering: m.DiskOffering | None, p: Params) -> int:
    """VolumeApiServiceImpl's size rule: `size` (GB), else the new offering's size, else the
    current one; a smaller size must be signed off with `shrinkok=true`."""
    size_gb = _long(p, "size")
    new_size = size_gb * GIB if size_gb else ((offering.disk_size_gb if offering else 0) * GIB or vol.size)
    if new_size < vol.size and not _flag(p, "shrinkok"):
        raise m.ParamError(f"Going from existing size of {vol.size} to size of {new_size} would shrink the volume."
                           "Need to sign off by supplying the shrinkok parameter with value of true.")
    return new_size


def _resize_job(model: m.CloudStackModel, p: Params, command: str, action: Callable[..., None], *,
                offering_required: bool) -> Item:
    """resizeVolume and changeOfferingForVolume: the same parameters and size rule."""
    _required(command, p, "id", *(("diskofferingid",) if offering_required else ()))
    vol = _need(model.volumes, p, "id")
    offering = (_need if offering_required else _opt_need)(model.disk_offerings, p, "diskofferingid")
    new_size = _new_size(vol, offering, p)
    return _job(model, command, "Volume", vol.id,
                lambda: action(model, vol.id, new_size, offering=offering, shrink_ok=_flag(p, "shrinkok"),
                               min_iops=_long(p, "miniops"), max_iops=_long(p, "maxiops")),
                lambda: _volume_item(model, vol.id))


def resize_volume(model: m.CloudStackModel, p: Params) -> Item:
    return _resize_job(model, p, "resizeVolume", orch.resize_volume, offering_required=False)


def change_offering_for_volume(model: m.CloudStackModel, p: Params) -> Item:
    return _resize_job(model, p, "changeOfferingForVolume", orch.change_volume_offering, offering_required=True)


def migrate_volume(model: m.CloudStackModel, p: Params) -> Item:
    _required("migrateVolume", p, "volumeid", "storageid")
    vol = _need(model.volumes, p, "volumeid")
    pool = _need(model.storage_pools, p, "storageid")
    if vol.storage_id == pool.id:
        raise m.ParamError(f"Volume {vol.name} is already on pool {pool.name}")
    if vol.state != "Ready" or not vol.storage_id:
        raise m.ParamError("Volume must be in ready state")
    vm = model.vms.get(vol.vm_id or "")
    if vm is not None and vm.state == "Running":
        # VolumeApiServiceImpl.migrateVolume: on KVM a running VM's volume moves in place only
        # between StorPool pools; anything else moves with its VM to another host.
        if file_pools.is_file_pool(model.storage_pools.get(vol.storage_id or "")) or file_pools.is_file_pool(pool):
            raise m.ParamError(
                "KVM does not support volume live migration due to the limited possibility to refresh VM XML "
                "domain. Therefore, to live migrate a volume between storage pools, one must migrate the VM to a "
                "different host as well to force the VM XML domain update. Use 'migrateVirtualMachineWithVolumes' "
                "instead.")
        if not _flag(p, "livemigrate"):
            raise m.ParamError(f"The volume {vol.name}is attached to a vm and for migrating it the parameter "
                               "livemigrate should be specified")
    return _job(model, "migrateVolume", "Volume", vol.id,
                lambda: orch.migrate_volume(model, vol.id, pool.id), lambda: _volume_item(model, vol.id))


def migrate_vm_with_volume(model: m.CloudStackModel, p: Params) -> Item:
    """migrateVirtualMachineWithVolume (MigrateVirtualMachineWithVolumeCmd, an async command: its
    checks run in the job): a running VM to another host, its volumes named in `migrateto`
    (`migrateto[N].volume`, `migrateto[N].pool`) onto those pools. Served: volumes on pools of
    other kinds moving onto StorPool (StorPoolDataMotionStrategy, `orchestrator.
    migrate_vm_with_volumes`). `autoselect` and a stopped VM's storage-only move are not."""
    _required("migrateVirtualMachineWithVolume", p, "virtualmachineid")
    vm = _need(model.vms, p, "virtualmachineid")
    host = _opt_need(model.hosts, p, "hostid")
    entries = params_mod.map_param(p, "migrateto")
    moves: dict[str, str] = {}
    for entry in entries:
        vol = _need(model.volumes, entry, "volume")
        pool = _need(model.storage_pools, entry, "pool")
        moves[vol.id] = pool.id

    def work() -> Item:
        if host is None and not moves:
            raise m.ParamError("Either hostid or migrateto must be passed or autoselect must be true for "
                               "migrating the VM.")
        if vm.state != "Running" and host is not None:
            raise m.ParamError(f"VM instance {vm.instance_name} is not in the Running state to migrate it to the "
                               "new host.")
        if host is None:
            raise m.ParamError("Migrating a stopped VM's volumes (no hostid) is not served by this simulator")
        if vm.state != "Running":
            raise m.ApiError(f"Unable to migrate the VM {vm.instance_name} (ID: {vm.id}) as it is not in Running state")
        if any(s.vm_id == vm.id for s in model.vm_snapshots.values()):
            raise m.ParamError("VM with VM Snapshots cannot be migrated with storage, please remove all VM snapshots")
        if host.id == vm.host_id:
            raise m.ParamError(f"Migration of the VM: {vm.instance_name} (ID: {vm.id}) from host {host.name} "
                               f"(ID: {host.id}) to destination host  {host.name} (ID: {host.id}) doesn't involve "
                               "migrating the volumes")
        for vid, pid in moves.items():
            vol, pool = model.volumes[vid], model.storage_pools[pid]
            if vol.vm_id != vm.id:
                raise m.ParamError(f"Volume {vol.name} is not attached to VM {vm.name}")
            if not file_pools.is_file_pool(model.storage_pools.get(vol.storage_id or "")) or \
                    file_pools.is_file_pool(pool):
                raise m.ParamError(f"Volume {vol.name}: only a move from an NFS or RBD pool onto StorPool is "
                                   "served by this simulator")
        orch.migrate_vm_with_volumes(model, vm.id, host.id, moves)
        return _vm_item(model, vm.id)

    return _async(model, "migrateVirtualMachineWithVolume", work, instance_type="VirtualMachine",
                  instance_id=vm.id)


def delete_volume(model: m.CloudStackModel, p: Params) -> Item:
    """Synchronous, as DeleteVolumeCmd is (a BaseCmd, not an async one)."""
    _required("deleteVolume", p, "id")
    vol = _need(model.volumes, p, "id")
    if vol.vm_id:
        raise m.ParamError("Please specify a volume that is not attached to any VM.")
    orch.delete_volume(model, vol.id)
    return _success()


def destroy_volume(model: m.CloudStackModel, p: Params) -> Item:
    """DestroyVolumeCmd (async): VolumeApiServiceImpl.destroyVolume, in the job. An attached
    volume is refused; with `expunge` the volume goes from storage at once, as deleteVolume's
    does, and is answered Expunged; without, it is marked Destroy and keeps its storage (CloudStack's
    expunge thread removes it later: the simulator has none), and an Allocated volume can only
    be expunged. A user may expunge its own (allow.user.expunge.recover.volume's default)."""
    _required("destroyVolume", p, "id")
    vol = _need(model.volumes, p, "id")
    expunge = _flag(p, "expunge")

    def work() -> Item:
        with model.lock:
            if vol.vm_id:
                raise m.ParamError("Please specify a volume that is not attached to any VM.")
            if not expunge and vol.state in ("Allocated", "Uploaded"):
                raise m.ParamError("The volume in Allocated/Uploaded state can only be expunged not "
                                   "destroyed/recovered")
            if not expunge:
                vol.state = "Destroy"
                model.add_event("VOLUME.DESTROY", f"Volume {vol.name} destroyed", vol.id, "Volume")
                return _volume_item(model, vol.id)
            item = _volume_item(model, vol.id)
        orch.delete_volume(model, vol.id)
        item["volume"]["state"] = "Expunged"
        return item

    return _async(model, "destroyVolume", work, instance_type="Volume", instance_id=vol.id)


# ---------------------------------------------------------------------------- snapshots


def create_snapshot(model: m.CloudStackModel, p: Params) -> Item:
    _required("createSnapshot", p, "volumeid")
    vol = _need(model.volumes, p, "volumeid")
    if vol.state != "Ready" or not vol.path:
        raise m.ParamError(f"VolumeId: {vol.id} is not in Ready state but {vol.state}. Cannot take snapshot.")
    zones = _uuid_list(model, model.zones, p, "zoneids")
    pools = _uuid_list(model, model.storage_pools, p, "storageids")
    replication = _flag(p, "usestoragereplication")
    if replication and not zones:
        raise m.ParamError("There is no destination zone provided")
    # CreateSnapshotCmd.create (allocSnapshot, before the job): the pools of the other zones.
    targets = _replication_pools(model, [z for z in zones if z != vol.zone_id], pools) if replication else []
    snap = orch.allocate_snapshot(model, vol.id, p.get("name"))

    def action() -> None:
        # SnapshotManagerImpl.takeSnapshot: with `usestoragereplication` the snapshot is then
        # copied to a pool of each zone of `zoneids` (copyNewSnapshotToZonesOnPrimary).
        orch.take_snapshot(model, snap.id)
        if targets:
            orch.copy_snapshot_to_pools(model, snap.id, targets)

    return _job(model, "createSnapshot", "Snapshot", snap.id, action,
                _render(model, "snapshot", "_snapshot", model.snapshots, snap.id), create=True)


def delete_snapshot(model: m.CloudStackModel, p: Params) -> Item:
    """DeleteSnapshotCmd: with `zoneid`, only that zone's copy goes (the record stays while
    another zone holds one)."""
    _required("deleteSnapshot", p, "id")
    snap = _need(model.snapshots, p, "id")
    zone = _opt_need(model.zones, p, "zoneid")

    def action() -> None:
        orch.delete_snapshot(model, snap.id, zone.id if zone is not None else None)
        if zone is not None and zone.id == snap.zone_id and snap.copies:
            with model.lock:
                # Still held in another zone: the record stays, in the zone of a copy.
                model.snapshots[snap.id] = snap
                model.removed_snapshots.discard(snap.id)
                snap.storage_id, snap.backup_path = None, None
                first = model.storage_pools.get(next(iter(snap.copies)))
                if first is not None:
                    snap.zone_id = first.zone_id

    return _job(model, "deleteSnapshot", "Snapshot", snap.id, action, _success)


def _uuid_list(model: m.CloudStackModel, table: Mapping[str, Any], p: Params, name: str) -> list[str]:
    """A CommandType.LIST of UUIDs: comma-separated, each one an existing entity."""
    out = []
    for item in (x.strip() for x in (p.get(name) or "").split(",")):
        if item:
            _need(table, {name: item}, name)
            out.append(item)
    return out


def _replication_pools(model: m.CloudStackModel, zone_ids: list[str], pool_ids: list[str]) -> list[str]:
    """SnapshotHelper.addStoragePoolsForCopyToPrimary + checkIfThereAreMoreThanOnePoolInTheZone:
    the pools given, else in each zone the first StorPool pool whose `use.storage.replication`
    is true."""
    chosen = list(pool_ids)
    if not chosen:
        with model.lock:
            for zone_id in zone_ids:
                found = [pool.id for pool in model.storage_pools.values() if pool.zone_id == zone_id
                         and pool.provider == "StorPool"
                         and model.config_value("use.storage.replication", "storagepool", pool.id) == "true"]
                chosen.extend(found[:1])
        if not chosen:
            raise m.ParamError("Cannot copy snapshot to primary storage. There aren't storage pools that "
                               "support this operation")
    zones = [model.storage_pools[pid].zone_id for pid in chosen]
    if any(zones.count(z) > 1 for z in zones):
        raise m.ApiError("Cannot copy the snapshot on multiple storage pools in one zone")
    return chosen


def copy_snapshot(model: m.CloudStackModel, p: Params) -> Item:
    """CopySnapshotCmd -> SnapshotManagerImpl.copySnapshot, for the copy between StorPool
    primary storages of different zones (`usestoragereplication`). The API layer checks the ids;
    the rest runs in the job, in CloudStack's order: then each pool (`storageids`, else in each
    destination zone the first StorPool pool with `use.storage.replication` true, SnapshotHelper.
    addStoragePoolsForCopyToPrimary) gets the copy. Copies between image stores are not simulated."""
    _required("copySnapshot", p, "id")
    snap = _need(model.snapshots, p, "id")
    replication = _flag(p, "usestoragereplication")
    dest = _uuid_list(model, model.zones, p, "destzoneids")
    one = _opt_need(model.zones, p, "destzoneid")
    source = _opt_need(model.zones, p, "sourcezoneid")
    pools = _uuid_list(model, model.storage_pools, p, "storageids")

    def work() -> Item:
        targets = list(dest)
        if one is not None and not targets and replication:
            targets = [one.id]
        if one is None and not targets and replication:
            raise m.MissingParam("Either destzoneid or destzoneids parameters have to be specified.")
        if one is not None and dest:
            raise m.MissingParam("Both destzoneid and destzoneids cannot be specified at the same time.")
        if one is not None:
            targets = [one.id]
        if snap.state != "BackedUp" and not replication:
            raise m.ParamError("Snapshot is not backed up")
        source_zone = source.id if source is not None else snap.zone_id
        if not targets:
            raise m.ParamError("Please specify valid destination zone(s).")
        if source_zone in targets:
            raise m.ParamError("Please specify different source and destination zones.")
        if not replication:
            raise m.Unsupported("copySnapshot between image stores is not simulated: use usestoragereplication=true")
        orch.copy_snapshot_to_pools(model, snap.id, _replication_pools(model, targets, pools))
        return _render(model, "snapshot", "_snapshot", model.snapshots, snap.id)()

    return _async(model, "copySnapshot", work, instance_type="Snapshot", instance_id=snap.id)


def revert_snapshot(model: m.CloudStackModel, p: Params) -> Item:
    _required("revertSnapshot", p, "id")
    snap = _need(model.snapshots, p, "id")
    vol = model.volumes.get(snap.volume_id)
    if vol is None:
        raise m.ParamError("The volume this snapshot was taken of no longer exists")
    vm = model.vms.get(vol.vm_id or "")
    if vm is not None and vm.state != "Stopped":
        raise m.ParamError(f"The VM the specified disk is attached to is not in the shutdown state; it is {vm.state}")

    return _job(model, "revertSnapshot", "Snapshot", snap.id, lambda: orch.revert_snapshot(model, snap.id),
                _render(model, "snapshot", "_snapshot", model.snapshots, snap.id))


# ---------------------------------------------------------------------------- templates


def create_template(model: m.CloudStackModel, p: Params) -> Item:
    _required("createTemplate", p, "name", "ostypeid")
    snapshot = _opt_need(model.snapshots, p, "snapshotid")
    volume = _opt_need(model.volumes, p, "volumeid")
    zone = _opt_need(model.zones, p, "zoneid")
    if zone is not None and snapshot is None:
        raise m.ParamError("Failed to create private template record, zone ID can only be specified together with "
                           "snapshot ID.")
    if (snapshot is None) == (volume is None):
        raise m.ParamError("Failed to create private template record, please specify only one of volume ID "
                           "(volumeid) and snapshot ID (snapshotid)")
    if volume is not None:
        vm = model.vms.get(volume.vm_id or "")
        if vm is not None and vm.state != "Stopped":
            raise m.ParamError(f"VolumeId: {volume.id} please attach this volume to a stopped VM or detach it "
                               "first to create a template")
    tpl = orch.allocate_template(model, p["name"], snapshot=snapshot, volume=volume,
                                 zone_id=zone.id if zone is not None else None, account=callers.current().account)

    snapshot_id, volume_id = (snapshot.id if snapshot else None), (volume.id if volume else None)
    return _job(model, "createTemplate", "Template", tpl.id,
                lambda: orch.create_template(model, tpl.id, snapshot_id=snapshot_id, volume_id=volume_id),
                _render(model, "template", "_template", model.templates, tpl.id), create=True)


def delete_template(model: m.CloudStackModel, p: Params) -> Item:
    _required("deleteTemplate", p, "id")
    tpl = _need(model.templates, p, "id")
    users = [vm.name for vm in model.vms.values() if vm.template_id == tpl.id]
    forced = _flag(p, "forced")

    def work() -> Item:
        if users and not forced:
            raise m.ParamError(f"Unable to delete template with id: {tpl.id} because VM instances: "
                               f"[{', '.join(users)}] are using it.")
        orch.delete_template(model, tpl.id, forced=forced)
        return _success()

    return _async(model, "deleteTemplate", work, instance_type="Template", instance_id=tpl.id)


# ---------------------------------------------------------------------------- VM snapshots


def create_vm_snapshot(model: m.CloudStackModel, p: Params) -> Item:
    _required("createVMSnapshot", p, "virtualmachineid")
    vm = _need(model.vms, p, "virtualmachineid")
    if vm.state not in ("Running", "Stopped"):
        raise m.ParamError(f"Creating VM snapshot failed due to VM:{vm.id} is not in the running or Stopped state")
    memory = _flag(p, "snapshotmemory")
    if memory and vm.state != "Running":
        raise m.ParamError("Can not snapshot memory when VM is not in Running state")
    snap = orch.allocate_vm_snapshot(model, vm.id, p.get("name"), p.get("description", ""), memory=memory)

    return _job(model, "createVMSnapshot", "VMSnapshot", snap.id, lambda: orch.take_vm_snapshot(model, snap.id),
                _render(model, "vmsnapshot", "_vm_snapshot", model.vm_snapshots, snap.id), create=True)


def revert_to_vm_snapshot(model: m.CloudStackModel, p: Params) -> Item:
    _required("revertToVMSnapshot", p, "vmsnapshotid")
    snap = _need(model.vm_snapshots, p, "vmsnapshotid")
    vm = model.vms[snap.vm_id]
    if snap.state != "Ready":
        raise m.ParamError(f"VM Snapshot reverting failed due to vm snapshot {snap.name} is not in Ready state")
    if snap.type == "Disk" and vm.state == "Running":
        raise m.ParamError("VM Snapshot reverting failed due to vm is not in the state as Shutdown or Running, "
                           "and a disk-only snapshot needs the VM stopped")
    return _job(model, "revertToVMSnapshot", "VMSnapshot", snap.id,
                lambda: orch.revert_vm_snapshot(model, snap.id), lambda: _vm_item(model, vm.id))


def delete_vm_snapshot(model: m.CloudStackModel, p: Params) -> Item:
    _required("deleteVMSnapshot", p, "vmsnapshotid")
    snap = _need(model.vm_snapshots, p, "vmsnapshotid")
    return _job(model, "deleteVMSnapshot", "VMSnapshot", snap.id, lambda: orch.delete_vm_snapshot(model, snap.id), _success)


HANDLERS: dict[str, Callable[[m.CloudStackModel, Params], Item]] = {
    "createStoragePool": create_storage_pool,
    "deleteStoragePool": delete_storage_pool,
    "deployVirtualMachine": deploy_vm,
    "startVirtualMachine": start_vm,
    "stopVirtualMachine": stop_vm,
    "rebootVirtualMachine": reboot_vm,
    "migrateVirtualMachine": migrate_vm,
    "destroyVirtualMachine": destroy_vm,
    "expungeVirtualMachine": expunge_vm,
    "createTags": create_tags,
    "deleteTags": delete_tags,
    "createVolume": create_volume,
    "attachVolume": attach_volume,
    "detachVolume": detach_volume,
    "resizeVolume": resize_volume,
    "changeOfferingForVolume": change_offering_for_volume,
    "migrateVolume": migrate_volume,
    "migrateVirtualMachineWithVolume": migrate_vm_with_volume,
    "deleteVolume": delete_volume,
    "destroyVolume": destroy_volume,
    "createSnapshot": create_snapshot,
    "deleteSnapshot": delete_snapshot,
    "copySnapshot": copy_snapshot,
    "revertSnapshot": revert_snapshot,
    "createTemplate": create_template,
    "deleteTemplate": delete_template,
    "createVMSnapshot": create_vm_snapshot,
    "revertToVMSnapshot": revert_to_vm_snapshot,
    "deleteVMSnapshot": delete_vm_snapshot,
}
"""Command name -> handler; server.py registers them (all change the world: saved after)."""
