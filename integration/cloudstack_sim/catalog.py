"""Smaller commands around the storage ones: guest OS types, API discovery, pool tags, snapshot
details, migration targets, volume extraction (CloudStack's ManagementServerImpl,
ApiDiscoveryServiceImpl, StorageManagerImpl, the solidfire-intg-test plugin's
GetVolumeSnapshotDetailsCmd that the StorPool tests use, VolumeApiServiceImpl.extractVolume).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from integration.cloudstack_sim import model as m
from integration.cloudstack_sim.params import Params, flag, int_param, need, required
from integration.cloudstack_sim.storage_commands import _async

Item = dict[str, Any]

OS_TYPES = (
    ("Other", "Other Linux (64-bit)"),
    ("Other", "Other (64-bit)"),
    ("Debian", "Debian GNU/Linux 12 (64-bit)"),
    ("CentOS", "CentOS 5.3 (64-bit)"),
    ("CentOS", "CentOS 5.6 (64-bit)"),
    ("CentOS", "CentOS 6.3 (64-bit)"),
    ("CentOS", "CentOS 7"),
    ("RedHat", "Red Hat Enterprise Linux 6.0 (64-bit)"),
    ("RedHat", "Red Hat Enterprise Linux 7"),
    ("Ubuntu", "Ubuntu 22.04 LTS"),
    ("Windows", "Windows 7 (64-bit)"),
    ("Windows", "Windows 8 (64-bit)"),
    ("Windows", "Windows Server 2012 (64-bit)"),
)
"""(category, description) of some of CloudStack's guest OS types (the guest_os table)."""

DEFAULT_OS = "Other Linux (64-bit)"


def os_type_id(description: str) -> str:
    return m.seeded_id("ostype", description)


def list_os_types(model: m.CloudStackModel, p: Params) -> list[Item]:
    """ListGuestOsCmd: by id, by `description` or `keyword` (both a substring of the display name,
    SQL LIKE %...%)."""
    ids = {os_type_id(d) for _, d in OS_TYPES}
    if p.get("id") and p["id"] not in ids:
        raise m.no_entity("id", p["id"])
    out = []
    for category, description in OS_TYPES:
        if p.get("id") and p["id"] != os_type_id(description):
            continue
        if p.get("description") and p["description"].lower() not in description.lower():
            continue
        if p.get("keyword") and p["keyword"].lower() not in description.lower():
            continue
        out.append({"id": os_type_id(description), "oscategoryid": m.seeded_id("oscategory", category),
                    "oscategoryname": category, "name": description, "description": description,
                    "isuserdefined": False, "fordisplay": True})
    return out


def update_storage_pool(model: m.CloudStackModel, p: Params) -> Item:
    """UpdateStoragePoolCmd (synchronous): `tags` replace the pool's storage tags (an empty value
    removes them), `name`, `capacitybytes`, `enabled` (Up / Disabled)."""
    required("updateStoragePool", p, "id")
    pool = need(model.storage_pools, p, "id")
    capacity = int_param(p, "capacitybytes", 64)
    if capacity is not None and capacity < pool.used:
        raise m.ParamError("Storage pool capacity bytes cannot be less than the used bytes")
    with model.lock:
        if "tags" in p:
            pool.tags = ",".join(t.strip() for t in p["tags"].split(",") if t.strip())
        if p.get("name"):
            pool.name = p["name"]
        if capacity is not None:
            pool.capacity = capacity
        if p.get("enabled"):
            pool.state = "Up" if flag(p, "enabled") else "Disabled"
        model.add_event("STORAGE.POOL.UPDATE", f"Updated storage pool {pool.name}", pool.id, "StoragePool")
        return {"storagepool": _wire()._pool(model, pool)}


def get_volume_snapshot_details(model: m.CloudStackModel, p: Params) -> list[Item]:
    """GetVolumeSnapshotDetailsCmd: the snapshot's snapshot_details rows. The StorPool plugin keeps
    the snapshot's StorPool path there under the snapshot's uuid (and, for the Java plugin, the
    pool's id under SP_STORAGE_POOL_ID); where the simulator kept only the path the plugin answered,
    that path is the row."""
    required("getVolumeSnapshotDetails", p, "snapshotid")
    snap = model.snapshots.get(p["snapshotid"])
    if snap is None:
        raise m.ApiError(f"Unable to find Volume for ID: {p['snapshotid']}")
    rows = dict(snap.details)
    if snap.path and snap.id not in rows:
        rows[snap.id] = snap.path
    internal = int(snap.id.replace("-", "")[:7], 16)
    return [{"volumeSnapshotId": internal, "snapshotDetailsName": k, "snapshotDetailsValue": v}
            for k, v in rows.items()]


def find_hosts_for_migration(model: m.CloudStackModel, p: Params) -> list[Item]:
    """FindHostsForMigrationCmd (ManagementServerImpl.listHostsForMigrationOfVM): only a running
    VM; the other Up and Enabled hosts of its zone, with `requiresStorageMotion` false (its
    volumes are on zone-wide pools every host reaches)."""
    required("findHostsForMigration", p, "virtualmachineid")
    vm = need(model.vms, p, "virtualmachineid")
    if vm.state != "Running":
        raise m.ParamError(f"VM is not running, cannot migrate the vm {vm.name}")
    out = []
    for host in model.hosts.values():
        if host.id == vm.host_id or host.zone_id != vm.zone_id or host.state != "Up":
            continue
        if host.resource_state != "Enabled":
            continue
        item = _wire()._host(model, host, False)
        item.update({"requiresStorageMotion": False, "suitableformigration": True})
        out.append(item)
    return out


def extract_volume(model: m.CloudStackModel, p: Params) -> Item:
    """ExtractVolumeCmd (async): HTTP_DOWNLOAD of a volume that is detached or whose VM is
    stopped; the answer carries the URL the image store serves it at."""
    required("extractVolume", p, "id", "mode", "zoneid")
    vol = need(model.volumes, p, "id")
    need(model.zones, p, "zoneid")
    mode = p["mode"]
    if mode.upper() not in ("HTTP_DOWNLOAD", "FTP_UPLOAD"):
        raise m.ParamError("Please specify a valid extract Mode ")
    if mode.upper() == "FTP_UPLOAD":
        raise m.ParamError("FTP_UPLOAD is not supported for volumes; use HTTP_DOWNLOAD")
    vm = model.vms.get(vol.vm_id or "")
    if vm is not None and vm.state != "Stopped":
        raise m.ParamError(f"Invalid state of the volume with ID: {vol.id}. It should be either detached or the VM "
                           "should be in stopped state.")
    if vol.state != "Ready":
        raise m.ParamError(f"Volume {vol.id} is not in the Ready state")
    zone = model.zones[p["zoneid"]]

    def work() -> Item:
        return {"volume": {
            "id": vol.id, "name": vol.name, "extractId": vol.id, "state": "DOWNLOAD_URL_CREATED",
            "status": "DOWNLOAD_URL_CREATED", "uploadpercentage": 100, "zoneid": zone.id, "zonename": zone.name,
            "extractMode": "HTTP_DOWNLOAD", "storagetype": "Primary", "created": m.cs_time(),
            "url": f"http://127.0.0.1/userdata/{vol.id}.qcow2", "accountid": m.seeded_id("account", vol.account),
        }}

    return _async(model, "extractVolume", work, instance_type="Volume", instance_id=vol.id)


def _wire() -> Any:
    import importlib

    return importlib.import_module("integration.cloudstack_sim.server")


COMMANDS: dict[str, Callable[[m.CloudStackModel, Params], Item]] = {
    "updateStoragePool": update_storage_pool,
    "extractVolume": extract_volume,
}
LISTS: dict[str, tuple[str, Callable[[m.CloudStackModel, Params], list[Item]]]] = {
    "listOsTypes": ("ostype", list_os_types),
    "getVolumeSnapshotDetails": ("apivolumesnapshotdetails", get_volume_snapshot_details),
    "findHostsForMigration": ("host", find_hosts_for_migration),
}
