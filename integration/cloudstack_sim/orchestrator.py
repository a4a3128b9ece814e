"""What the management server's storage subsystem calls on the primary-storage driver, in which
order and with which data: the simulator's stand-in for CloudStack's orchestration classes.

Each function names the CloudStack classes it follows. The plugin's side is reached through
`plugin_calls.StoragePlugin`: the driver service's operations only (where CloudStack's KVM
agent would act on a host, a host-side operation of the service picks the host and runs its
agent; the simulator dials no agent). Records change the way CloudStack's
database does: a volume exists as a record (state Allocated) before the driver creates it,
and its `path` is what the driver answered (`/dev/storpool-byid/<globalId>`), so that every
later call names the volume the way CloudStack would.

Model changes happen under the model's lock, plugin calls outside it: the plugin calls back
into this API (listVirtualMachines, listConfigurations...) while it works.

A VM's disks on its KVM host (CloudStack's KVM agent, LibvirtComputingResource and
KVMStoragePoolManager, calling the plugin's StorPoolStorageAdaptor) are the service's host-side
operations, called where the management server sends the host its command:
- StartCommand (VirtualMachineManagerImpl.orchestrateStart, also the HA restart of a VM whose
  host was fenced): `hand_over_vm` -- every disk force-detached from every other host, then
  connectPhysicalDisk on the new host. CloudStack calls the driver's
  detachVolumeFromAllStorageNodes (a forced `VolumesReassign` detach-all, from the management
  server) in two places: orchestrateStart, for each Ready ROOT volume of the VM, before the
  deployment planner picks a host; HighAvailabilityManagerImpl.restart, for every StorPool
  volume of a KVM VM, before it starts the VM elsewhere. The project's equivalent needs the
  target host and connects in the same step, so the simulator plays both at StartCommand, the
  first point where the host is known; it detaches every disk (data disks too), from every
  host but the new one;
- StopCommand (orchestrateStop; LibvirtStopCommandWrapper's cleanupDisk per disk):
  `vm_stopped` on the host the VM ran on, before the VM's record says Stopped;
- PrepareForMigrationCommand on the destination (connectPhysicalDisksViaVmSpec):
  `prepare_migration`; MigrateCommand moves the guest; then `finish_migration`, whose
  `succeeded` says which host lets go: the source after a move (LibvirtMigrateCommandWrapper's
  cleanupDisk), the destination after a failed one (the cleanup CloudStack sends it);
- AttachCommand / DettachCommand on a running VM's host (KVMStorageProcessor.attachVolume /
  dettachVolume): `connect_physical_disk` / `disconnect_physical_disk`;
- a host joining (HostListener.hostConnect, StorPoolHostListener): `host_connected`, whose
  `parent` CloudStack keeps in `host.parent`.

A host letting go of disks (stop, a migration's source or failed destination, a detach) is
the KVM agent's cleanupDisk / disconnectPhysicalDisk, whose result CloudStack ignores: a
failure there is logged and the command still succeeds (the disk stays attached until the
next start's hand-over takes it). Connecting is checked: a start, an attach or a migration's
preparation fails with the plugin's error.
"""

from __future__ import annotations

import base64
import logging
import secrets
import time
from pathlib import Path
from typing import Any

from cloudstack_storpool.names import BYID_PREFIX
from cloudstack_storpool.poolconfig import Secret
from integration.cloudstack_sim import file_pools
from integration.cloudstack_sim import model as m
from integration.cloudstack_sim.plugin_calls import StoragePlugin

"""The prefix of the paths the driver answers (StorPoolUtil.SP_DEV_PATH)."""

log = logging.getLogger(__name__)

GIB = 1024**3
ACCOUNT_ID = "2"
"""The admin account's id: the first path element CloudStack uses on the image store."""
BYPASS_SETTING = "sp.bypass.secondary.storage"


def _plugin(model: m.CloudStackModel) -> StoragePlugin:
    if model.plugin is None:
        raise m.ApiError("Unable to find the storage provider StorPool: the simulator has no plugin configured")
    return model.plugin


def _store(model: m.CloudStackModel) -> str:
    if not model.image_store:
        raise m.ApiError("There is no secondary storage (image store) in this zone")
    return model.image_store


def _template_path(tpl: m.Template) -> str:
    """TemplateConstants' layout on the image store: template/tmpl/<account>/<id>/<file>."""
    return tpl.install_path or f"template/tmpl/1/{tpl.id}/{tpl.id}.{tpl.format.lower()}"


# ---------------------------------------------------------------------------- storage pools


def create_storage_pool(model: m.CloudStackModel, name: str, url: str, zone_id: str, tags: str,
                        capacity: int | None) -> m.StoragePool:
    """StorageManagerImpl.createPool -> StorPoolPrimaryDataStoreLifeCycle.initialize (parses the
    URL, checks StorPool) -> attachZone. One plugin call: `register_pool`, with the pool's
    CloudStack uuid, so both sides name it the same."""
    pool_id = m.new_id()
    _plugin(model).call("register_pool", name=name, url=url, uuid=pool_id, zone=zone_id)
    with model.lock:
        # StorPoolPrimaryDataStoreLifeCycle.initialize: type StorPool, path SP_DEV_PATH, tags = the
        # pool's name unless given (the StoragePool defaults hold the first two).
        kw: dict[str, Any] = {"tags": tags or name, "url": url.split(";SP_AUTH_TOKEN", 1)[0] if ";" in url else ""}
        if capacity:
            kw["capacity"] = capacity
        pool = m.StoragePool(pool_id, name, zone_id, **kw)
        model.storage_pools[pool.id] = pool
        model.add_event("STORAGE.POOL.CREATE", f"Created storage pool {name}", pool.id, "StoragePool")
        return pool


def create_file_pool(model: m.CloudStackModel, name: str, url: str, zone_id: str, tags: str,
                     capacity: int | None) -> m.StoragePool:
    """StorageManagerImpl.createPool with the default provider ->
    CloudStackPrimaryDataStoreLifeCycleImpl.initialize (the URL gives type, host, port, path) ->
    attachZone: every host mounts the pool (ModifyStoragePoolCommand). No storage plugin is
    involved (see `file_pools`). The URL is kept without its user part (an RBD secret)."""
    where = file_pools.parse_url(url)
    assert where is not None
    parts = url.split("://", 1)
    shown = f"{parts[0]}://{parts[1].rsplit('@', 1)[-1]}"
    with model.lock:
        kw: dict[str, Any] = {"capacity": capacity} if capacity else {}
        pool = m.StoragePool(m.new_id(), name, zone_id, provider=file_pools.DEFAULT_PROVIDER, type=where.type,
                             path=where.path, tags=tags, url=shown, **kw)
    file_pools.mount(model, pool.id)
    with model.lock:
        model.storage_pools[pool.id] = pool
        model.add_event("STORAGE.POOL.CREATE", f"Created storage pool {name}", pool.id, "StoragePool")
        return pool


def delete_storage_pool(model: m.CloudStackModel, pool: m.StoragePool) -> None:
    """StorageManagerImpl.deletePool -> StorPoolPrimaryDataStoreLifeCycle.deleteDataStore:
    `remove_pool` (which refuses while the pool holds snapshots or templates kept as StorPool
    snapshots, and otherwise deletes its template caches and the hosts' check volumes). A pool
    of another kind is unmounted by the hosts (DeleteStoragePoolCommand), no plugin call."""
    if file_pools.is_file_pool(pool):
        file_pools.unmount(model, pool.id)
        with model.lock:
            model.storage_pools.pop(pool.id, None)
        return
    _plugin(model).call("remove_pool", pool=pool.id)
    with model.lock:
        model.storage_pools.pop(pool.id, None)


# ---------------------------------------------------------------------------- VM life cycle


def allocate_vm(model: m.CloudStackModel, name: str, tpl: m.Template, offering: m.ServiceOffering, *,
                root_size: int | None, disk_offering: m.DiskOffering | None, data_size: int | None,
                account: str = "admin", root_offering: m.DiskOffering | None = None,
                root_volume: m.Volume | None = None, root_snapshot: m.Snapshot | None = None) -> m.VirtualMachine:
    """VirtualMachineManagerImpl.allocate: the VM and its volumes as records only (Allocated);
    the driver is called when the VM first starts (VolumeOrchestrator.prepare).

    Deployed from an existing volume (`root_volume`), the VM gets no new root: that volume
    becomes its ROOT disk (device 0) with its own offering, and the plugin tags it with its VM
    as for any attach (`volume_attached`). Deployed from a snapshot (`root_snapshot`), the ROOT
    record is Allocated with the snapshot's size and, as any new root, the root disk offering:
    the service offering's, or `overridediskofferingid` (UserVmManagerImpl picks it before the
    source is looked at; VolumeOrchestrator.allocateTemplatedVolume gives it to the new volume,
    whatever the snapshot's volume had); the first start creates it from the snapshot
    (`_create_root`)."""
    with model.lock:
        vm = model.add_vm(name or f"VM-{m.new_id()[:8]}", template_id=tpl.id, service_offering_id=offering.id,
                          state="Stopped", storage_id=None, root_size=root_size, account=account)
        if not name:
            vm.name = vm.instance_name
        root = next(v for v in model.volumes.values() if v.vm_id == vm.id and v.type == "ROOT")
        root.state, root.storage_id, root.path, root.template_id = "Allocated", None, None, tpl.id
        if root_volume is not None:
            del model.volumes[root.id]
            root = root_volume
            root.vm_id, root.device_id, root.type = vm.id, 0, "ROOT"
        elif root_snapshot is not None:
            root.source_snapshot_id = root_snapshot.id
            root.size = max(root_size or 0, root_snapshot.size)
        if root_offering is not None and root_volume is None:  # overridediskofferingid: the ROOT disk's own offering
            root.disk_offering_id = root_offering.id
            root.min_iops, root.max_iops = root_offering.min_iops, root_offering.max_iops
        if disk_offering is not None:
            data = model.add_volume(f"DATA-{vm.instance_name.split('-')[2]}",
                                    data_size or disk_offering.disk_size_gb * GIB, vm_id=vm.id, device_id=1,
                                    disk_offering_id=disk_offering.id, account=account)
            data.state = "Allocated"
        return vm


def root_adopted(model: m.CloudStackModel, vm_id: str) -> None:
    """A VM deployed from an existing volume: the plugin tags that volume, now its ROOT disk,
    with its VM (`volume_attached`), as for any volume attached to a VM."""
    root = next(v for v in vm_volumes(model, vm_id) if v.type == "ROOT")
    _tag_attached(model, root, vm_id)


def _disk_paths(model: m.CloudStackModel, vm_id: str) -> list[str]:
    """The VM's disks as the hypervisor gets them: the root first, then by device id."""
    vols = sorted(vm_volumes(model, vm_id), key=lambda v: (v.type != "ROOT", v.device_id or 0))
    return [_host_path(model, v) for v in vols if v.path]


def _host_path(model: m.CloudStackModel, vol: m.Volume) -> str:
    """A disk as the KVM host names it: the StorPool device path CloudStack stored, or, for a
    volume on a pool of another kind, its file under the pool's mount point."""
    if on_file_pool(model, vol):
        return str(file_pools.volume_file(model, vol))
    return vol.path or ""


def on_file_pool(model: m.CloudStackModel, vol: m.Volume) -> bool:
    """The volume lives on a pool of another kind than StorPool (its KVM agent's business, not
    the plugin's)."""
    return file_pools.is_file_pool(model.storage_pools.get(vol.storage_id or ""))


def _storpool_disks(model: m.CloudStackModel, vm_id: str) -> bool:
    """The VM has a volume on StorPool: only then does a host-side step reach the plugin (the KVM
    agent hands each disk to the adaptor of its pool's type)."""
    return any(v.path and not on_file_pool(model, v) for v in vm_volumes(model, vm_id))


def _disk_passphrases(model: m.CloudStackModel, vm_id: str) -> dict[str, str]:
    """The passphrases of the VM's encrypted disks, by path (what StartCommand's VolumeObjectTOs
    carry to the KVM agent)."""
    return {v.path: v.passphrase for v in vm_volumes(model, vm_id) if v.path and v.passphrase}


def vm_volumes(model: m.CloudStackModel, vm_id: str) -> list[m.Volume]:
    with model.lock:
        return sorted((v for v in model.volumes.values() if v.vm_id == vm_id), key=lambda v: v.device_id or 0)


def _pool_for(model: m.CloudStackModel, vm_id: str | None, zone_id: str, tags: str = "") -> m.StoragePool:
    """The storage pool allocator's choice (AbstractStoragePoolAllocator, ZoneWideStoragePoolAllocator):
    a pool of the zone (StorPool or another kind) that is Up and holds every storage tag of the volume's offering
    (an offering without tags fits any pool); the pool of the VM's other volumes first when it
    fits, else the first that does."""
    wanted = {t.strip() for t in tags.split(",") if t.strip()}

    def fits(pool: m.StoragePool) -> bool:
        held = {t.strip() for t in pool.tags.split(",") if t.strip()}
        return pool.zone_id == zone_id and pool.state == "Up" and wanted <= held

    with model.lock:
        if vm_id:
            for v in model.volumes.values():
                pool = model.storage_pools.get(v.storage_id or "")
                if v.vm_id == vm_id and pool is not None and fits(pool):
                    return pool
        for pool in model.storage_pools.values():
            if fits(pool):
                return pool
    raise m.ApiError("Unable to find suitable primary storage when creating volume"
                     + (f" (storage tags {','.join(sorted(wanted))})" if wanted else ""))


def _offering_tags(model: m.CloudStackModel, vol: m.Volume, vm: m.VirtualMachine | None) -> str:
    """The storage tags a volume needs: its disk offering's, or for a ROOT volume without one of
    its own (overridediskofferingid) its VM's service offering's (the disk offering CloudStack
    makes behind it carries them)."""
    with model.lock:
        if vol.type == "ROOT" and vm is not None and not vol.disk_offering_id:
            service = model.service_offerings.get(vm.service_offering_id)
            return service.tags if service else ""
        off = model.disk_offerings.get(vol.disk_offering_id or "")
        return off.tags if off else ""


def _host_for(model: m.CloudStackModel, host_id: str | None, vm: m.VirtualMachine) -> m.Host:
    with model.lock:
        if host_id:
            return model.hosts[host_id]
        preferred = [vm.last_host_id] if vm.last_host_id else []
        for hid in [*preferred, *model.hosts]:
            host = model.hosts.get(hid or "")
            if host is not None and host.state == "Up" and host.zone_id == vm.zone_id and "agent.port" in host.details:
                return host
    raise m.ApiError(f"Unable to create a deployment for VM {vm.name}: no host is Up")


def _encrypts(model: m.CloudStackModel, vol: m.Volume, vm: m.VirtualMachine | None) -> bool:
    """DiskOffering.getEncrypt() of the volume's offering (VolumeOrchestrator.createVolume /
    recreateVolume): a disk offering's `encrypt`, for a ROOT volume its VM's service offering's
    `encryptroot` (which CloudStack keeps on the disk offering it makes behind the service
    offering). A volume that already has a passphrase keeps it."""
    with model.lock:
        if vol.passphrase:
            return True
        if vol.type == "ROOT" and vm is not None:
            service = model.service_offerings.get(vm.service_offering_id)
            return bool(service and service.encrypt_root)
        off = model.disk_offerings.get(vol.disk_offering_id or "")
        return bool(off and off.encrypt)


def _passphrase(model: m.CloudStackModel, vol: m.Volume) -> Secret:
    """VolumeOrchestrator.setPassphraseForVolumeEncryption: a new PassphraseVO (48 random bytes,
    base64: 64 characters) unless the volume has one already."""
    with model.lock:
        if not vol.passphrase:
            vol.passphrase = base64.b64encode(secrets.token_bytes(48)).decode()
        return Secret(vol.passphrase)


def _create_encrypted(model: m.CloudStackModel, vol: m.Volume, pool: m.StoragePool, *, size: int,
                      source_path: str | None = None, **offering: Any) -> None:
    """StorPoolPrimaryDataStoreDriver.createAsync (a data disk) or copyAsync(template on the pool
    -> volume) (a root disk) for a volume with a passphrase:
    1. `create_volume` with `encrypted` (the StorPool volume 2 MiB larger, for the LUKS header);
       CloudStack keeps its path at once (the driver's updateVolume);
    2. StorPoolSetVolumeEncryptionCommand on a host of the pool: `set_volume_encryption` with the
       passphrase and, for a root disk, the template's copy on the pool as `source_path`, whose
       content goes into the encrypted payload. The answer's format is the volume's
       `encryptformat`.
    When step 2 fails the volume step 1 made is deleted (`delete_volume`) and the record is
    Allocated again, so nothing stays on StorPool that CloudStack does not know; a new attempt
    starts over with the same passphrase. The passphrase is sent as a `Secret`, so the call log
    shows it masked."""
    passphrase = _passphrase(model, vol)
    plugin = _plugin(model)
    result = plugin.call("create_volume", pool=pool.id, volume_uuid=vol.id, size=size, volume_type=vol.type,
                         encrypted=True, **offering)
    with model.lock:
        vol.path, vol.storage_id, vol.state = result["path"], pool.id, "Creating"
    try:
        answer = plugin.call("set_volume_encryption", volume_uuid=vol.id, passphrase=passphrase,
                             source_path=source_path)
    except BaseException:
        try:
            plugin.call("delete_volume", pool=pool.id, volume_uuid=vol.id, path=result["path"])
        except m.ApiError as exc:
            log.warning("delete_volume after a failed encryption of %s: %s", vol.id, exc.text)
        with model.lock:
            vol.path, vol.storage_id, vol.state = None, None, "Allocated"
        raise
    with model.lock:
        vol.state, vol.encrypt_format = "Ready", str(answer["encrypt_format"])


def _template_path_on(model: m.CloudStackModel, tpl: m.Template, pool: m.StoragePool, source: dict[str, str]) -> str:
    """The template's copy on the pool (template_spool_ref's install path). A pool that holds the
    template from before its path was recorded asks the plugin again: `cache_template` answers
    the copy that is there."""
    with model.lock:
        known = tpl.pool_paths.get(pool.id)
    if known:
        return known
    _cache_template(model, tpl, pool, source)
    return tpl.pool_paths[pool.id]


def _cache_template(model: m.CloudStackModel, tpl: m.Template, pool: m.StoragePool, source: dict[str, str]) -> None:
    """createBaseImageAsync -> driver.copyAsync(template on the image store -> the pool):
    `cache_template`; CloudStack records the copy (template_spool_ref) with its path."""
    result = _plugin(model).call("cache_template", pool=pool.id, template_uuid=tpl.id, source=source, size=tpl.size)
    with model.lock:
        if pool.id not in tpl.pools:
            tpl.pools.append(pool.id)
        if result and result.get("global_id"):
            tpl.pool_paths[pool.id] = BYID_PREFIX + str(result["global_id"])


def _created(model: m.CloudStackModel, volume_id: str, pool_id: str, result: dict[str, Any]) -> None:
    """The driver's answer is what CloudStack stores: the path it returned, on that pool. An
    encrypted volume keeps its size: StorPool's includes the LUKS header."""
    with model.lock:
        vol = model.volumes[volume_id]
        vol.path, vol.storage_id, vol.state = result["path"], pool_id, "Ready"
        if result.get("size") and not vol.passphrase:
            vol.size = int(result["size"])


def _create_root(model: m.CloudStackModel, vol: m.Volume, vm: m.VirtualMachine) -> None:
    """VolumeServiceImpl.createVolumeFromTemplateAsync:
    1. no template_spool_ref for this pool -> createBaseImageAsync -> driver.copyAsync(template
       on the image store -> the pool): `cache_template` (source = its image-store path);
    2. createVolumeFromBaseImageAsync -> driver.copyAsync(template on the pool -> volume):
       `create_volume_from_template` (ROOT, the VM's service offering, which carries its
       IOPS and StorPool template, size = rootdisksize).
    With `encryptroot` on the service offering, step 2 is the encrypted copy (`_create_encrypted`:
    `create_volume` of the template's size or rootdisksize, then `set_volume_encryption` with the
    template's copy on the pool as its source)."""
    if vol.source_snapshot_id:
        create_volume_from_snapshot(model, vol.id, vol.source_snapshot_id)
        with model.lock:
            vol.source_snapshot_id = None
        return
    pool = _pool_for(model, None, vm.zone_id, _offering_tags(model, vol, vm))
    with model.lock:
        tpl = model.templates.get(vol.template_id or vm.template_id)
        if tpl is None:
            raise m.ApiError(f"The template of volume {vol.name} no longer exists")
        cached = pool.id in tpl.pools
    source = {"store": _store(model), "path": _template_path(tpl), "format": tpl.format.lower()}
    if file_pools.is_file_pool(pool):  # the KVM agent copies the template onto the pool itself
        path = file_pools.create_from_template(model, pool, vol.id, Path(source["store"]) / source["path"],
                                               tpl.format, max(vol.size, tpl.size))
        _created(model, vol.id, pool.id, {"path": path, "size": max(vol.size, tpl.size)})
        return
    plugin = _plugin(model)
    if not cached:
        _cache_template(model, tpl, pool, source)
    if _encrypts(model, vol, vm):
        _create_encrypted(model, vol, pool, size=max(vol.size, tpl.size),
                          source_path=_template_path_on(model, tpl, pool, source),
                          service_offering_id=vm.service_offering_id)
        with model.lock:
            vol.size = max(vol.size, tpl.size)
        return
    size = vol.size if vol.size > tpl.size else None
    result = plugin.call("create_volume_from_template", pool=pool.id, volume_uuid=vol.id, template_uuid=tpl.id,
                         size=size, source=source, volume_type="ROOT", service_offering_id=vm.service_offering_id,
                         **({"disk_offering_id": vol.disk_offering_id} if vol.disk_offering_id else {}))
    _created(model, vol.id, pool.id, result)
    with model.lock:
        if not vol.size or vol.size < tpl.size:
            vol.size = tpl.size


def create_volume_on_pool(model: m.CloudStackModel, volume_id: str, pool_id: str | None = None) -> None:
    """VolumeOrchestrator.createVolumeOnPrimaryStorage -> VolumeServiceImpl.createVolumeAsync ->
    driver.createAsync: `create_volume` (size, disk offering, custom IOPS); for a disk offering
    with `encrypt`, the encrypted create (`_create_encrypted`)."""
    with model.lock:
        vol = model.volumes[volume_id]
        vm = model.vms.get(vol.vm_id or "")
    pool = (model.storage_pools[pool_id] if pool_id
            else _pool_for(model, vm.id if vm else None, vol.zone_id, _offering_tags(model, vol, vm)))
    if file_pools.is_file_pool(pool):  # CreateCommand to a host of the pool: a new file
        _created(model, vol.id, pool.id, {"path": file_pools.create_blank(model, pool, vol.id, vol.size)})
        return
    off = model.disk_offerings.get(vol.disk_offering_id or "")
    custom = vol.max_iops if off is not None and off.customized_iops else None
    if _encrypts(model, vol, vm):
        _create_encrypted(model, vol, pool, size=vol.size, disk_offering_id=vol.disk_offering_id, iops=custom)
        return
    result = _plugin(model).call("create_volume", pool=pool.id, volume_uuid=vol.id, size=vol.size,
                                 volume_type=vol.type, disk_offering_id=vol.disk_offering_id, iops=custom)
    _created(model, vol.id, pool.id, result)


def _tag_attached(model: m.CloudStackModel, vol: m.Volume, vm_id: str) -> None:
    """The plugin tags a volume with its VM and disk (the Java driver does it as it creates or
    attaches a volume): `volume_attached`. A volume on a pool of another kind is not its own."""
    if on_file_pool(model, vol):
        return
    _plugin(model).call("volume_attached", pool=vol.storage_id, volume_uuid=vol.id, vm_id=vm_id,
                        device_id=vol.device_id or 0, path=vol.path)


def _hand_over(model: m.CloudStackModel, vm_id: str, host: m.Host) -> None:
    """StartCommand's disks: force-detached from every other host, connected on this one
    (CloudStack's detachVolumeFromAllStorageNodes and connectPhysicalDisk in one call)."""
    if _storpool_disks(model, vm_id):
        _plugin(model).call("hand_over_vm", vm_id=vm_id, host_id=host.id)


def host_connected(model: m.CloudStackModel, host_id: str) -> m.Host:
    """AgentManagerImpl's connect listeners -> StorPoolHostListener.hostConnect: the plugin asks
    the host who it is to StorPool (`host_connected`, which refuses a client id another host
    has); the listener records the answer (`listener_records`). Not played: the Java listener
    also writes the host's location name into the pool's `sp.cluster.location`
    (setLocationIfNeeded); the stack sets it as it starts."""
    result = _plugin(model).call("host_connected", host_id=host_id)
    cluster = result.get("cluster_id")
    return listener_records(model, host_id, str(result["parent"]), str(cluster) if cluster else None)


SP_CLUSTER_ID = "sp.cluster.id"
"""StorPoolConfigurationManager.StorPoolClusterId: the cluster detail naming the StorPool cluster
of a CloudStack cluster's hosts."""


def listener_records(model: m.CloudStackModel, host_id: str, parent: str, sp_cluster_id: str | None) -> m.Host:
    """What StorPoolHostListener.hostConnect keeps from a connected host: its client id in
    `host.parent`, and its StorPool cluster id (`SP_CLUSTER_ID` of its storpool.conf) as its
    cluster's `sp.cluster.id` detail, added or changed when it differs
    (StorPoolHelper.setSpClusterIdIfNeeded, through the cluster details DAO). A host reporting
    no cluster id sets the detail to NULL, as the Java helper does (its `equals` differs)."""
    host = model.host_connected(host_id, parent)
    if model.cluster_details(host.cluster_id).get(SP_CLUSTER_ID) != sp_cluster_id:
        model.set_cluster_detail(host.cluster_id, SP_CLUSTER_ID, sp_cluster_id)
    return host


def start_vm(model: m.CloudStackModel, vm_id: str, host_id: str | None) -> None:
    """VirtualMachineManagerImpl.orchestrateStart:
    1. the deployment planner picks a host;
    2. VolumeOrchestrator.prepare: each volume still Allocated is created (ROOT from its
       template, then data disks), and tagged with its VM and disk;
    3. StartCommand on the host: `hand_over_vm` (every disk taken from any other host, then
       connected here; the HA restart of a fenced host's VM is the same call). A Java
       KVM host connects each disk of the VM spec (connectPhysicalDisksViaVmSpec); the
       detach from other hosts stands for detachVolumeFromAllStorageNodes, which CloudStack
       calls earlier (before step 1, Ready ROOT volumes only; see the module docstring).
    A failure leaves the VM Stopped (Error on its first start, as a failed deploy does)."""
    with model.lock:
        vm = model.vms[vm_id]
        first = any(v.state == "Allocated" for v in model.volumes.values() if v.vm_id == vm_id and v.type == "ROOT")
        vm.state = "Starting"
    try:
        host = _host_for(model, host_id, vm)
        for vol in vm_volumes(model, vm_id):
            if vol.state == "Allocated":
                if vol.type == "ROOT":
                    _create_root(model, vol, vm)
                else:
                    create_volume_on_pool(model, vol.id)
                _tag_attached(model, model.volumes[vol.id], vm_id)
        _hand_over(model, vm_id, host)
        model.hypervisor.vm_started(vm_id, host.id, _disk_paths(model, vm_id), _disk_passphrases(model, vm_id))
    except BaseException:
        with model.lock:
            vm.state = "Error" if first else "Stopped"
        raise
    with model.lock:
        model.start_vm(vm_id, host.id)


def _let_go(model: m.CloudStackModel, operation: str, **args: Any) -> None:
    """A host lets go of disks (LibvirtComputingResource.cleanupDisk, KVMStorageProcessor's
    disconnectPhysicalDisk): CloudStack does not check the result, so neither is this; the
    failure is logged, and the next start's hand-over detaches what is left."""
    try:
        _plugin(model).call(operation, **args)
    except m.ApiError as exc:
        log.warning("%s: %s (ignored, as CloudStack's KVM agent ignores a failed disk cleanup)", operation, exc.text)


def stop_vm(model: m.CloudStackModel, vm_id: str) -> None:
    """VirtualMachineManagerImpl.orchestrateStop: StopCommand on the host, whose KVM agent stops
    the domain and disconnects its disks (LibvirtStopCommandWrapper: cleanupDisk ->
    disconnectPhysicalDiskByPath for each): `vm_stopped` on that host; then the record says
    Stopped."""
    with model.lock:
        vm = model.vms[vm_id]
        if vm.state == "Stopped":
            return
        host_id = vm.host_id
    model.hypervisor.vm_stopped(vm_id)
    if host_id and _storpool_disks(model, vm_id):
        _let_go(model, "vm_stopped", vm_id=vm_id, host_id=host_id)
    with model.lock:
        model.stop_vm(vm_id)


def reboot_vm(model: m.CloudStackModel, vm_id: str) -> None:
    """VirtualMachineManagerImpl.orchestrateReboot: RebootCommand inside the hypervisor; the
    disks stay connected, storage is not called."""
    with model.lock:
        model.add_event("VM.REBOOT", f"Rebooted VM {model.vms[vm_id].name}", vm_id, "VirtualMachine")


def migrate_vm(model: m.CloudStackModel, vm_id: str, host_id: str) -> None:
    """VirtualMachineManagerImpl.migrate (a running VM to another host, same storage):
    1. PrepareForMigrationCommand on the destination connects every disk while the source
       still holds it: `prepare_migration` (a failure undoes its own connections and fails the
       job; the guest never moved);
    2. MigrateCommand on the source: the hypervisors move the guest, then the source lets go
       of the disks (LibvirtMigrateCommandWrapper's cleanupDisk): `finish_migration` with
       `succeeded` true; then the record names the new host;
    3. if the move failed, the cleanup CloudStack sends the destination lets go instead
       (`succeeded` false) and the job fails with the hypervisor's text.
    A stopped VM only gets a new last host: nothing to connect."""
    with model.lock:
        vm = model.vms[vm_id]
        source = vm.host_id if vm.state == "Running" else None
    if source is not None and _storpool_disks(model, vm_id):
        ends = {"vm_id": vm_id, "source_host_id": source, "dest_host_id": host_id}
        _plugin(model).call("prepare_migration", vm_id=vm_id, dest_host_id=host_id)
        try:
            model.hypervisor_migrate(vm_id, host_id)
            model.hypervisor.vm_migrated(vm_id, host_id, _disk_paths(model, vm_id), _disk_passphrases(model, vm_id))
        except m.ApiError as exc:
            _let_go(model, "finish_migration", **ends, succeeded=False)
            raise m.ApiError(f"Failed to migrate VM {vm.name} to host {host_id}: {exc.text}") from None
        _let_go(model, "finish_migration", **ends, succeeded=True)
    with model.lock:
        model.move_vm(vm_id, host_id)


def destroy_vm(model: m.CloudStackModel, vm_id: str, *, expunge: bool) -> None:
    """UserVmManagerImpl.destroyVm: stop; with expunge (expungeVm):
    1. VMSnapshotManagerImpl.deleteAllVMSnapshots -> StorPoolVMSnapshotStrategy.deleteVMSnapshot
       for each of its VM snapshots: `delete_vm_snapshot`;
    2. VolumeOrchestrator.cleanupVolumes -> VolumeServiceImpl.expungeVolumeAsync ->
       driver.deleteAsync for the ROOT volume: `delete_volume`;
    3. data disks are detached (they outlive the VM): `vm_destroyed` clears their VM tags."""
    stop_vm(model, vm_id)
    if not expunge:
        with model.lock:
            model.vms[vm_id].state = "Destroyed"
            model.add_event("VM.DESTROY", f"Destroyed VM {model.vms[vm_id].name}", vm_id, "VirtualMachine")
        return
    with model.lock:
        snaps = [s.id for s in model.vm_snapshots.values() if s.vm_id == vm_id]
    for sid in snaps:
        delete_vm_snapshot(model, sid)
    plugin_needed = _storpool_disks(model, vm_id)
    for vol in vm_volumes(model, vm_id):
        if vol.type == "ROOT" and vol.path:
            _delete_on_storage(model, vol)
    with model.lock:
        model.delete_vm(vm_id, expunge=True)
    if plugin_needed:
        _plugin(model).call("vm_destroyed", vm_id=vm_id)


def change_vm_tags(model: m.CloudStackModel, vm_id: str, wanted: dict[str, str], *, remove: bool) -> None:
    """TaggedResourceManagerImpl.createTags / deleteTags: inside the transaction that writes the
    tags, the plugin carries the VM's `vc-policy` to its volumes (provideVmTags):
    `vm_tags_changed` with `vc_policy` as the tag will be ("" once removed). The API shows the
    new tags only once that transaction commits, after the call."""
    with model.lock:
        vm = model.vms[vm_id]
        after = dict(vm.tags)
        for key, value in wanted.items():
            if remove:
                if not value or after.get(key) == value:
                    after.pop(key, None)
            else:
                after[key] = value
        if remove and not wanted:
            after.clear()
        on_storage = any(v.path for v in model.volumes.values() if v.vm_id == vm_id)
    if on_storage and after.get("vc-policy", "") != vm.tags.get("vc-policy", ""):
        _plugin(model).call("vm_tags_changed", vm_id=vm_id, vc_policy=after.get("vc-policy", ""))
    with model.lock:
        vm.tags = after


# ---------------------------------------------------------------------------- volumes


def allocate_volume(model: m.CloudStackModel, name: str, zone_id: str, *, offering: m.DiskOffering | None,
                    size: int | None, snapshot: m.Snapshot | None, min_iops: int | None,
                    max_iops: int | None, account: str = "admin") -> m.Volume:
    """VolumeApiServiceImpl.allocVolume: a record in state Allocated; no driver call."""
    with model.lock:
        src: m.Volume | None = None
        if snapshot is not None:
            src = model.volumes.get(snapshot.volume_id)  # the snapshot may have outlived it
            size = size or snapshot.size
            off_id = offering.id if offering else (src.disk_offering_id if src else None)
            if src is not None:
                min_iops, max_iops = min_iops or src.min_iops, max_iops or src.max_iops
        else:
            assert offering is not None
            size = size or offering.disk_size_gb * GIB
            off_id = offering.id
        vol = model.add_volume(name or f"DATA-{m.new_id()[:8]}", size, disk_offering_id=off_id,
                               min_iops=min_iops, max_iops=max_iops, account=account)
        vol.zone_id = zone_id or vol.zone_id
        if min_iops is not None or max_iops is not None:
            vol.min_iops, vol.max_iops = min_iops, max_iops
        if src is not None:
            # VolumeApiServiceImpl.commitVolume: a volume from a snapshot keeps the template of the
            # snapshot's volume (what deployVirtualMachine with `volumeid` deploys).
            vol.template_id = src.template_id
        vol.state = "Allocated"
        return vol


def copy_in_zone(model: m.CloudStackModel, snap: m.Snapshot, zone_id: str) -> tuple[str, str] | None:
    """The snapshot's copy on primary storage of `zone_id` (pool id, path), if it has one there."""
    for pool_id, path in snap.copies.items():
        pool = model.storage_pools.get(pool_id)
        if pool is not None and pool.zone_id == zone_id:
            return pool_id, path
    return None


def create_volume_from_snapshot(model: m.CloudStackModel, volume_id: str, snapshot_id: str) -> None:
    """VolumeOrchestrator.createVolumeFromSnapshot -> VolumeServiceImpl.createVolumeFromSnapshot
    -> DataMotionServiceImpl -> driver.copyAsync(snapshot -> volume):
    `create_volume_from_snapshot` on the snapshot's pool (with the image-store copy, when there
    is one, for a snapshot no longer on StorPool). The driver gets the new volume as CloudStack
    hands it over (a VolumeInfo): its type and disk offering, for a ROOT volume its VM's service
    offering too, from which the plugin takes the StorPool template and `qc` tag."""
    with model.lock:
        snap = model.snapshots[snapshot_id]
        vol = model.volumes[volume_id]
        vm = model.vms.get(vol.vm_id or "")
        pool_id, path = snap.storage_id, snapshot_path(snap)
        home = model.storage_pools.get(pool_id or "")
        if home is None or home.zone_id != vol.zone_id:
            # In another zone, the snapshot's copy on that zone's primary storage (copySnapshot).
            pool_id, path = copy_in_zone(model, snap, vol.zone_id) or (pool_id, path)
    if not pool_id:
        raise m.ApiError("Unable to find the primary storage holding the snapshot")
    secondary = {"store": _store(model), "path": snap.backup_path} if snap.backup_path else None
    offerings: dict[str, str] = {"disk_offering_id": vol.disk_offering_id} if vol.disk_offering_id else {}
    if vol.type == "ROOT" and vm is not None:
        offerings["service_offering_id"] = vm.service_offering_id
    result = _plugin(model).call("create_volume_from_snapshot", pool=pool_id, snapshot_uuid=snap.id,
                                 volume_uuid=vol.id, size=vol.size, iops=vol.max_iops, secondary=secondary,
                                 path=path, volume_type=vol.type, **offerings)
    _created(model, vol.id, pool_id, result)


def attach_volume(model: m.CloudStackModel, volume_id: str, vm_id: str, device_id: int | None) -> None:
    """VolumeApiServiceImpl.attachVolumeToVM:
    1. an Allocated volume is created first, on the pool of the VM's volumes
       (VolumeOrchestrator.createVolumeOnPrimaryStorage): `create_volume`;
    2. a running VM's host gets AttachCommand (KVMStorageProcessor.attachVolume ->
       connectPhysicalDisk): `connect_physical_disk` on that host;
    3. the record is attached, and the plugin tags the volume: `volume_attached`."""
    with model.lock:
        vol = model.volumes[volume_id]
        vm = model.vms[vm_id]
        used = {v.device_id for v in model.volumes.values() if v.vm_id == vm_id}
        if device_id is None:
            device_id = next(i for i in range(1, 64) if i not in used and i != 3)
        elif device_id in used:
            raise m.ParamError(f"deviceId {device_id} is used by VM {vm.name}")
    if vol.state == "Allocated":
        create_volume_on_pool(model, volume_id, _pool_for(model, vm_id, vm.zone_id, _offering_tags(model, vol, vm)).id)
    if vm.state == "Running" and vm.host_id:
        path = model.volumes[volume_id].path
        if not on_file_pool(model, vol):
            _plugin(model).call("connect_physical_disk", host_id=vm.host_id, path=path)
        if path:
            model.hypervisor.disk_attached(vm_id, vm.host_id, _host_path(model, vol), model.volumes[volume_id].passphrase)
    with model.lock:
        vol.vm_id, vol.device_id = vm_id, device_id
        model.add_event("VOLUME.ATTACH", f"Volume {vol.name} attached to VM {vm.name}", vol.id, "Volume")
    _tag_attached(model, vol, vm_id)


def detach_volume(model: m.CloudStackModel, volume_id: str) -> None:
    """VolumeApiServiceImpl.detachVolumeFromVM:
    1. a running VM's host gets DettachCommand (KVMStorageProcessor.dettachVolume: the domain
       lets go of the disk, then disconnectPhysicalDisk, its result unchecked):
       `disconnect_physical_disk` there;
    2. the record is detached, and the plugin drops the VM tags: `volume_detached`."""
    with model.lock:
        vol = model.volumes[volume_id]
        vm = model.vms.get(vol.vm_id or "")
        host_id = vm.host_id if vm is not None and vm.state == "Running" else None
    if host_id and vol.path and vm is not None:
        model.hypervisor.disk_detached(vm.id, host_id, _host_path(model, vol))
        if not on_file_pool(model, vol):
            _let_go(model, "disconnect_physical_disk", host_id=host_id, path=vol.path)
    with model.lock:
        vol.vm_id, vol.device_id = None, None
        model.add_event("VOLUME.DETACH", f"Volume {vol.name} detached", vol.id, "Volume")
    if vol.path and not on_file_pool(model, vol):
        _plugin(model).call("volume_detached", pool=vol.storage_id, volume_uuid=vol.id, path=vol.path)


def _iops_args(off: m.DiskOffering | None, min_iops: int | None, max_iops: int | None) -> int | None:
    return max_iops if off is None or off.customized_iops else None


def resize_volume(model: m.CloudStackModel, volume_id: str, new_size: int, *, offering: m.DiskOffering | None,
                  shrink_ok: bool, min_iops: int | None, max_iops: int | None) -> None:
    """VolumeApiServiceImpl.resizeVolume -> orchestrateResizeVolume -> VolumeServiceImpl.resize
    -> driver.resize (ResizeVolumePayload: new size, new offering, IOPS, and the hosts to send
    the command to: the VM's host, else its last host, none without a VM; the VM's instance
    name, "none" without one): `resize_volume`, which tells the first of those hosts it reaches
    (the agent's `resize`). An Allocated volume changes its record only."""
    with model.lock:
        vol = model.volumes[volume_id]
        vm = model.vms.get(vol.vm_id or "")
        hosts = [h for h in (vm.host_id or vm.last_host_id,) if h] if vm is not None else []
        instance = vm.instance_name if vm is not None else "none"
    if vol.path:
        _plugin(model).call("resize_volume", volume_uuid=vol.id, new_size=new_size, shrink_ok=shrink_ok,
                            host_ids=hosts, instance_name=instance,
                            disk_offering_id=offering.id if offering else None,
                            custom_iops=_iops_args(offering, min_iops, max_iops))
    with model.lock:
        vol.size = new_size
        if offering is not None:
            vol.disk_offering_id = offering.id
            if not offering.customized_iops:
                vol.min_iops, vol.max_iops = offering.min_iops, offering.max_iops
        if max_iops is not None:
            vol.min_iops, vol.max_iops = min_iops, max_iops
        model.add_event("VOLUME.RESIZE", f"Volume {vol.name} resized to {new_size}", vol.id, "Volume")


def change_volume_offering(model: m.CloudStackModel, volume_id: str, new_size: int, *, offering: m.DiskOffering | None,
                           shrink_ok: bool, min_iops: int | None, max_iops: int | None) -> None:
    """VolumeApiServiceImpl.changeDiskOfferingForVolume: a new size goes the resize way with the
    new offering in the payload (`resize_volume`); the same size re-applies the offering's
    StorPool template, `qc` and IOPS in place (`change_volume_offering`): StorPool pools suit
    every offering, so no migration is needed."""
    assert offering is not None  # required by the command
    with model.lock:
        vol = model.volumes[volume_id]
    if new_size != vol.size:
        resize_volume(model, volume_id, new_size, offering=offering, shrink_ok=shrink_ok,
                      min_iops=min_iops, max_iops=max_iops)
        return
    if vol.path:
        _plugin(model).call("change_volume_offering", pool=vol.storage_id, volume_uuid=vol.id, path=vol.path,
                            volume_type=vol.type, disk_offering_id=offering.id,
                            iops=_iops_args(offering, min_iops, max_iops))
    with model.lock:
        vol.disk_offering_id = offering.id
        if offering.customized_iops:
            vol.min_iops, vol.max_iops = min_iops, max_iops
        else:
            vol.min_iops, vol.max_iops = offering.min_iops, offering.max_iops


def migrate_volume(model: m.CloudStackModel, volume_id: str, pool_id: str) -> None:
    """VolumeApiServiceImpl.migrateVolume -> VolumeOrchestrator.migrateVolume ->
    VolumeServiceImpl.copyVolume/migrateVolume -> DataMotionServiceImpl picks the plugin's
    DataMotionStrategy (both pools are StorPool's): `migrate_volume`; the new path is stored.
    From a pool of another kind see `_copy_from_file_pool`."""
    with model.lock:
        vol = model.volumes[volume_id]
        target = model.storage_pools[pool_id]
    if on_file_pool(model, vol):
        if file_pools.is_file_pool(target):
            raise m.ApiError("Moving a volume between two pools of other kinds than StorPool is not served by "
                             "this simulator")
        _copy_from_file_pool(model, vol, target)
        return
    if file_pools.is_file_pool(target):
        raise m.ApiError("Moving a volume from StorPool to a pool of another kind is not served by this simulator")
    with model.lock:
        vm = model.vms.get(vol.vm_id or "")
        running = vm is not None and vm.state == "Running"
        service_offering = vm.service_offering_id if vm is not None and vol.type == "ROOT" else None
    result = _plugin(model).call("migrate_volume", volume_uuid=vol.id, source_pool=vol.storage_id, target_pool=pool_id,
                                 path=vol.path, vm_running=running, volume_type=vol.type,
                                 disk_offering_id=vol.disk_offering_id if vol.type != "ROOT" else None,
                                 service_offering_id=service_offering)
    _created(model, vol.id, pool_id, result["volume"])


def _copy_from_file_pool(model: m.CloudStackModel, vol: m.Volume, target: m.StoragePool) -> None:
    """An offline move from a pool of another kind onto StorPool (AncientDataMotionStrategy's
    copy between pools through the image store, VolumeServiceImpl.copyVolume):
    1. CopyCommand on a host: the volume's file is copied to the image store
       (volumes/<account>/<volume>/<volume>.qcow2);
    2. driver.copyAsync(that copy -> the StorPool pool): `import_volume` (the volume created, an
       agent copies the image in);
    3. the image-store copy goes, the source volume is expunged (its file deleted) and the
       record names the StorPool pool and path."""
    store = Path(_store(model))
    relative = f"volumes/{ACCOUNT_ID}/{vol.id}/{vol.id}.qcow2"
    with model.lock:
        vm = model.vms.get(vol.vm_id or "")
    fmt = file_pools.copy_out(model, vol, store, relative)
    try:
        result = _plugin(model).call(
            "import_volume", target_pool=target.id, volume_uuid=vol.id, size=vol.size,
            source={"store": str(store), "path": relative, "format": fmt}, volume_type=vol.type,
            disk_offering_id=vol.disk_offering_id if vol.type != "ROOT" else None,
            service_offering_id=vm.service_offering_id if vm is not None and vol.type == "ROOT" else None)
    finally:
        (store / relative).unlink(missing_ok=True)
    file_pools.delete(model, vol)
    _created(model, vol.id, target.id, result["volume"])
    if vm is not None:
        _tag_attached(model, vol, vm.id)


def migrate_vm_with_volumes(model: m.CloudStackModel, vm_id: str, host_id: str, moves: dict[str, str]) -> None:
    """migrateVirtualMachineWithVolume of a running VM (VirtualMachineManagerImpl.
    orchestrateMigrateWithStorage -> VolumeOrchestrator / VolumeServiceImpl.migrateVolumes ->
    DataMotionServiceImpl), `moves` = volume id -> StorPool pool id. With every destination on
    StorPool and another host, StorPoolDataMotionStrategy.copyAsync does it, in this order:
    1. per volume: the StorPool volume is created, named by the source volume's uuid
       (`create_volume`), and connected on the destination host (ModifyTargetsCommand:
       `connect_physical_disk`);
    2. PrepareForMigrationCommand on the destination connects the VM's disks already on StorPool
       (`prepare_migration`, only when it has some);
    3. MigrateCommand on the source: the hypervisor copies each moving disk onto its new device
       while the guest runs, then switches the guest to it and the destination host
       (`hypervisor.vm_migrated_with_storage`);
    4. success (handlePostMigration): the record takes the new pool and path, the source volume
       is expunged (a file pool's file deleted by a host), the plugin tags the new volume with
       its VM (`volume_attached`), and the source host lets go of the VM's other StorPool disks
       (`finish_migration`);
    5. failure: the destination's preparation is rolled back (`finish_migration` with
       `succeeded` false), the new volume disconnected there and deleted; the job fails with the
       hypervisor's text."""
    with model.lock:
        vm = model.vms[vm_id]
        source_host = vm.host_id
        vols = {vid: model.volumes[vid] for vid in moves}
    assert source_host is not None
    prepared = _storpool_disks(model, vm_id)
    created: dict[str, str] = {}  # volume id -> new StorPool path
    try:
        for vid, pool_id in moves.items():
            vol = vols[vid]
            result = _plugin(model).call("create_volume", pool=pool_id, volume_uuid=vol.id, size=vol.size,
                                         volume_type=vol.type, iops=vol.max_iops)
            created[vid] = str(result["path"])
            _plugin(model).call("connect_physical_disk", host_id=host_id, path=created[vid])
        if prepared:
            _plugin(model).call("prepare_migration", vm_id=vm_id, dest_host_id=host_id)
        ends = {"vm_id": vm_id, "source_host_id": source_host, "dest_host_id": host_id}
        try:
            model.hypervisor_migrate(vm_id, host_id)
            copies = {_host_path(model, vols[vid]): path for vid, path in created.items()}
            model.hypervisor.vm_migrated_with_storage(vm_id, host_id, copies)
        except Exception as exc:  # MigrateAnswer with result false: whatever the hypervisor hit
            if prepared:
                _let_go(model, "finish_migration", **ends, succeeded=False)
            text = exc.text if isinstance(exc, m.ApiError) else f"{type(exc).__name__}: {exc}"
            raise m.ApiError(f"Copy volume(s) of VM [{vm.instance_name}] to storage(s) and VM to host [{host_id}] "
                             f"failed in StorPoolDataMotionStrategy.copyAsync. Error message: [{text}].") from None
    except BaseException:
        for path in created.values():
            _let_go(model, "disconnect_physical_disk", host_id=host_id, path=path)
        for vid, path in created.items():
            _let_go(model, "delete_volume", pool=moves[vid], volume_uuid=vid, path=path)
        raise
    for vid, path in created.items():
        vol = vols[vid]
        if on_file_pool(model, vol):
            file_pools.delete(model, vol)
        else:
            _let_go(model, "delete_volume", pool=vol.storage_id, volume_uuid=vol.id, path=vol.path)
        _created(model, vid, moves[vid], {"path": path})
        _tag_attached(model, vol, vm_id)
    if prepared:
        _let_go(model, "finish_migration", vm_id=vm_id, source_host_id=source_host, dest_host_id=host_id,
                succeeded=True)
    with model.lock:
        model.move_vm(vm_id, host_id)


def delete_volume(model: m.CloudStackModel, volume_id: str) -> None:
    """VolumeApiServiceImpl.deleteVolume -> VolumeServiceImpl.expungeVolumeAsync ->
    driver.deleteAsync: `delete_volume` (an Allocated volume was never on storage)."""
    with model.lock:
        vol = model.volumes[volume_id]
    if vol.path:
        _delete_on_storage(model, vol)
    with model.lock:
        model.volumes.pop(volume_id, None)
        model.add_event("VOLUME.DELETE", f"Volume {vol.name} deleted", vol.id, "Volume")


def _delete_on_storage(model: m.CloudStackModel, vol: m.Volume) -> None:
    """driver.deleteAsync: `delete_volume` on StorPool; on a pool of another kind the KVM agent
    deletes the file (DeleteCommand)."""
    if on_file_pool(model, vol):
        file_pools.delete(model, vol)
    else:
        _plugin(model).call("delete_volume", pool=vol.storage_id, volume_uuid=vol.id, path=vol.path)


# ---------------------------------------------------------------------------- snapshots


def allocate_snapshot(model: m.CloudStackModel, volume_id: str, name: str | None) -> m.Snapshot:
    """SnapshotManagerImpl.allocSnapshot: the record, state Allocated, owned by the volume's
    account (whoever asked for it)."""
    with model.lock:
        vol = model.volumes[volume_id]
        snap = model.add_snapshot(volume_id, name or f"{vol.name}_{time_stamp()}", account=vol.account)
        snap.state, snap.size = "Allocated", vol.size
        return snap


def snapshot_path(snap: m.Snapshot) -> str | None:
    """The snapshot's StorPool path as CloudStack keeps it: the snapshot_details row under the
    snapshot's uuid (StorPoolHelper.getSnapshotName reads it first), else the path the driver
    answered. Every snapshot operation hands it to the plugin, as CloudStack hands it to the
    Java driver."""
    return snap.details.get(snap.id) or snap.path


def time_stamp() -> str:
    return time.strftime("%Y%m%d%H%M%S", time.gmtime())


def take_snapshot(model: m.CloudStackModel, snapshot_id: str) -> None:
    """SnapshotManagerImpl.takeSnapshot -> StorageStrategyFactory.getSnapshotStrategy: the
    plugin's SnapshotStrategy, whose takeSnapshot is driver.takeSnapshot followed, unless
    `sp.bypass.secondary.storage`, by the backup to the image store (copyAsync snapshot ->
    image store). Both are one operation: `take_snapshot`, given where CloudStack wants the
    backup (snapshots/<account>/<volume>/<snapshot>); the plugin answers whether it bypassed.
    An encrypted volume's snapshot says so (`encrypted`): a backup would hold ciphertext
    CloudStack cannot read back, so the plugin refuses it unless the bypass is on."""
    with model.lock:
        snap = model.snapshots[snapshot_id]
        vol = model.volumes[snap.volume_id]
        snap.state = "Creating"
    where = {"store": _store(model), "path": f"snapshots/{ACCOUNT_ID}/{vol.id}/{snap.id}.qcow2"}
    try:
        result = _plugin(model).call("take_snapshot", volume_uuid=vol.id, snapshot_uuid=snap.id, secondary=where,
                                     encrypted=bool(vol.passphrase) or None)
    except BaseException:
        with model.lock:
            model.snapshots.pop(snapshot_id, None)
        raise
    with model.lock:
        snap.path, snap.storage_id = result["path"], vol.storage_id
        snap.details[snap.id] = result["path"]  # the Java plugin's snapshot_details row
        backup = result.get("backup")
        snap.backup_path = backup["path"] if backup else None
        snap.physical_size = int(backup["physical_size"]) if backup else 0
        snap.state = "BackedUp"
        model.add_event("SNAPSHOT.CREATE", f"Snapshot {snap.name} created", snap.id, "Snapshot")


def delete_snapshot(model: m.CloudStackModel, snapshot_id: str, zone_id: str | None = None) -> None:
    """SnapshotManagerImpl.deleteSnapshot -> SnapshotStrategy.deleteSnapshot: `delete_snapshot`
    on the pool of its volume, and on each pool of another zone holding a copy (with `zone_id`:
    only that zone's); the image-store copy is CloudStack's to remove (it does)."""
    with model.lock:
        snap = model.snapshots[snapshot_id]
        copies = {pid: path for pid, path in snap.copies.items()
                  if zone_id is None or (pid in model.storage_pools and model.storage_pools[pid].zone_id == zone_id)}
    for pool_id, copy_path in copies.items():
        _plugin(model).call("delete_snapshot", pool=pool_id, snapshot_uuid=snap.id, path=copy_path)
        with model.lock:
            snap.copies.pop(pool_id, None)
    if zone_id is not None and zone_id != snap.zone_id:
        return
    path = snapshot_path(snap)
    if path and snap.storage_id:
        _plugin(model).call("delete_snapshot", pool=snap.storage_id, snapshot_uuid=snap.id, path=path)
    if snap.backup_path and model.image_store:
        (Path(model.image_store) / snap.backup_path).unlink(missing_ok=True)
    with model.lock:
        model.snapshots.pop(snapshot_id, None)
        model.removed_snapshots.add(snapshot_id)


def copy_snapshot_to_pools(model: m.CloudStackModel, snapshot_id: str, pool_ids: list[str]) -> None:
    """SnapshotManagerImpl.copySnapshotToPrimaryDifferentZone -> copySnapshotOnPool for each
    pool: SnapshotStrategy.copySnapshot (StorPoolSnapshotStrategy) is `copy_snapshot`, given the
    snapshot's pool and path; the answer's path becomes the snapshot_store_ref of that pool and
    the snapshot is then in that pool's zone (snapshot_zone_ref). A pool whose copy fails is
    logged and skipped, as copySnapshotOnPool does."""
    with model.lock:
        snap = model.snapshots[snapshot_id]
        source, path = snap.storage_id, snapshot_path(snap)
    if not source or not path:
        raise m.ApiError(f"Snapshot {snap.id} is not on primary storage")
    for pool_id in pool_ids:
        with model.lock:
            if pool_id in snap.copies:
                continue  # SnapshotManagerImpl.isSnapshotExistsOnPool
        try:
            result = _plugin(model).call("copy_snapshot", snapshot_uuid=snap.id, source_pool=source, pool=pool_id,
                                         path=path)
        except m.ApiError as exc:
            log.warning("copy of snapshot %s to pool %s failed: %s", snap.id, pool_id, exc.text)
            continue
        with model.lock:
            snap.copies[pool_id] = result["path"]
            model.add_event("SNAPSHOT.COPY", f"Snapshot {snap.name} copied to pool {pool_id}", snap.id, "Snapshot")


def revert_snapshot(model: m.CloudStackModel, snapshot_id: str) -> None:
    """SnapshotManagerImpl.revertSnapshot -> SnapshotStrategy.revertSnapshot: `revert_volume`."""
    with model.lock:
        snap = model.snapshots[snapshot_id]
    _plugin(model).call("revert_volume", volume_uuid=snap.volume_id, snapshot_uuid=snap.id, path=snapshot_path(snap))


# ---------------------------------------------------------------------------- templates


def allocate_template(model: m.CloudStackModel, name: str, *, snapshot: m.Snapshot | None,
                      volume: m.Volume | None, zone_id: str | None = None, account: str = "admin") -> m.Template:
    """TemplateManagerImpl.createPrivateTemplateRecord: the record, not ready yet (in `zone_id`
    when given: a snapshot's zone, CreateTemplateCmd's `zoneid`), owned by `account` (the
    caller: CreateTemplateCmd.getEntityOwnerId)."""
    with model.lock:
        size, zone = (volume.size, volume.zone_id) if volume is not None else (snapshot.size, snapshot.zone_id)  # type: ignore[union-attr]
        zone = zone_id or zone
        tpl = model.add_template(name, size, zone_id=zone, ready=False)
        tpl.public = tpl.featured = False
        tpl.account = account
        tpl.install_path = f"template/tmpl/{ACCOUNT_ID}/{tpl.id}/{tpl.id}.qcow2"
        return tpl


def create_template(model: m.CloudStackModel, template_id: str, *, snapshot_id: str | None,
                    volume_id: str | None) -> None:
    """TemplateManagerImpl.createPrivateTemplate -> TemplateServiceImpl.createTemplateFromSnapshot
    / createTemplateFromVolumeAsync -> DataMotionServiceImpl -> driver.copyAsync(snapshot or
    volume -> template on the image store): `create_template_from_snapshot`, which also keeps
    the template cached on the source pool (so the pool holds it: a template_spool_ref)."""
    with model.lock:
        tpl = model.templates[template_id]
        pool_id = model.volumes[volume_id].storage_id if volume_id else model.snapshots[snapshot_id].storage_id  # type: ignore[index]
        snap = model.snapshots[snapshot_id] if snapshot_id else None
        path = snapshot_path(snap) if snap is not None else None
        home = model.storage_pools.get(pool_id or "")
        if snap is not None and (home is None or home.zone_id != tpl.zone_id):
            # A template of another zone is made from the snapshot's copy there.
            there = copy_in_zone(model, snap, tpl.zone_id)
            if there is None:
                model.templates.pop(template_id, None)
                raise m.ApiError(f"Unable to find snapshot {snap.id} in zone {tpl.zone_id}")
            pool_id, path = there
    try:
        made = _plugin(model).call("create_template_from_snapshot", pool=pool_id, template_uuid=tpl.id,
                                   snapshot_uuid=snapshot_id, volume_uuid=volume_id,
                                   snapshot_path=path,
                                   secondary={"store": _store(model), "path": tpl.install_path})
    except BaseException:
        with model.lock:
            model.templates.pop(template_id, None)
        raise
    with model.lock:
        tpl.ready = True
        if pool_id and pool_id not in tpl.pools:
            tpl.pools.append(pool_id)
        if pool_id and isinstance(made, dict) and made.get("path"):
            tpl.pool_paths[pool_id] = str(made["path"])


def delete_template(model: m.CloudStackModel, template_id: str, *, forced: bool) -> None:
    """TemplateManagerImpl.delete removes the record and the image-store copy; then
    StorageManagerImpl.cleanupStorage (storage.cleanup.enabled) evicts the template from every
    pool where no volume uses it any more: driver.deleteAsync(template on the pool) =
    `drop_cached_template`. Pools still used keep it; the plugin's GC removes it later."""
    with model.lock:
        tpl = model.templates[template_id]
        model.delete_template(template_id, forced=forced)
        in_use = {v.storage_id for v in model.volumes.values() if v.template_id == template_id}
        evict = [(p, tpl.pool_paths.get(p)) for p in tpl.pools if p not in in_use and p in model.storage_pools]
    if model.image_store and tpl.install_path:
        (Path(model.image_store) / tpl.install_path).unlink(missing_ok=True)
    for pool_id, path in evict:
        _plugin(model).call("drop_cached_template", pool=pool_id, template_uuid=template_id, path=path)


# ---------------------------------------------------------------------------- VM snapshots


def allocate_vm_snapshot(model: m.CloudStackModel, vm_id: str, name: str | None, description: str, *,
                         memory: bool) -> m.VMSnapshot:
    """VMSnapshotManagerImpl.allocVMSnapshot: the record, state Allocated."""
    with model.lock:
        vm = model.vms[vm_id]
        snap = model.add_vm_snapshot(vm_id, name or f"{vm.instance_name}_VS_{time_stamp()}",
                                     description=description, type="DiskAndMemory" if memory else "Disk")
        snap.state = "Allocated"
        return snap


def take_vm_snapshot(model: m.CloudStackModel, vm_snapshot_id: str) -> None:
    """VMSnapshotManagerImpl.createVMSnapshot -> StorageStrategyFactory.getVmSnapshotStrategy ->
    StorPoolVMSnapshotStrategy.takeVMSnapshot: `take_vm_snapshot` (one group snapshot)."""
    with model.lock:
        snap = model.vm_snapshots[vm_snapshot_id]
        snap.state = "Creating"
    try:
        _plugin(model).call("take_vm_snapshot", vm_uuid=snap.vm_id, vm_snapshot_uuid=snap.id,
                            memory=snap.type != "Disk")
    except BaseException:
        with model.lock:
            model.vm_snapshots.pop(vm_snapshot_id, None)
        raise
    with model.lock:
        snap.state = "Ready"


def revert_vm_snapshot(model: m.CloudStackModel, vm_snapshot_id: str) -> None:
    """VMSnapshotManagerImpl.revertToVMSnapshot -> StorPoolVMSnapshotStrategy.revertVMSnapshot:
    `revert_vm_snapshot`; the reverted snapshot becomes the current one."""
    with model.lock:
        snap = model.vm_snapshots[vm_snapshot_id]
    _plugin(model).call("revert_vm_snapshot", vm_uuid=snap.vm_id, vm_snapshot_uuid=snap.id)
    with model.lock:
        for other in model.vm_snapshots.values():
            if other.vm_id == snap.vm_id:
                other.current = other.id == snap.id


def delete_vm_snapshot(model: m.CloudStackModel, vm_snapshot_id: str) -> None:
    """VMSnapshotManagerImpl.deleteVMSnapshot -> StorPoolVMSnapshotStrategy.deleteVMSnapshot:
    `delete_vm_snapshot`."""
    with model.lock:
        snap = model.vm_snapshots[vm_snapshot_id]
    _plugin(model).call("delete_vm_snapshot", vm_uuid=snap.vm_id, vm_snapshot_uuid=snap.id)
    with model.lock:
        model.vm_snapshots.pop(vm_snapshot_id, None)
