"""Offerings made and removed at run time, and resource details: CloudStack's
ConfigurationManagerImpl (createServiceOffering, createDiskOffering, their deletes) and
ResourceMetaDataManagerImpl (addResourceDetail, listResourceDetails, removeResourceDetail).

An offering carries storage tags (the pool allocator places its volumes only on pools holding
every tag), fixed or customised IOPS, encryption (`encryptroot` / `encrypt`) and details; the
StorPool plugin reads `SP_TEMPLATE` and `SP_QOSCLASS` among the details, which is why resource
details of offerings land in the offering's own details (CloudStack's disk_offering_details and
service_offering_details tables, where `addResourceDetail` writes for those resource types).
A deleted offering is Inactive: no longer listed, still named by the volumes made from it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from integration.cloudstack_sim import model as m
from integration.cloudstack_sim.params import Params, details_param, flag, int_param, need, required
from integration.cloudstack_sim.storage_commands import _async

Item = dict[str, Any]

_STORAGE_TYPES = ("shared", "local")


def clean_tags(raw: str | None) -> str:
    """StringUtils.cleanupTags: comma-separated, each trimmed, empty ones dropped."""
    return ",".join(t.strip() for t in (raw or "").split(",") if t.strip())


def _iops(p: Params, customized: bool) -> tuple[int | None, int | None]:
    """Fixed IOPS only without customised IOPS; min above max is refused (ConfigurationManagerImpl)."""
    if customized:
        return None, None
    low, high = int_param(p, "miniops", 64), int_param(p, "maxiops", 64)
    if low is not None and high is not None and low > high:
        raise m.ParamError("The min IOPS must be less than or equal to the max IOPS.")
    if (low is not None and low < 0) or (high is not None and high < 0):
        raise m.ParamError("The min IOPS and max IOPS must be greater than or equal to 0.")
    return low, high


def _storage_type(p: Params) -> None:
    if p.get("storagetype") and p["storagetype"].lower() not in _STORAGE_TYPES:
        raise m.ParamError(f"Invalid storage type {p['storagetype']} specified, valid types are: "
                           f"[{', '.join(_STORAGE_TYPES)}]")


def create_service_offering(model: m.CloudStackModel, p: Params) -> Item:
    """CreateServiceOfferingCmd (synchronous). A fixed offering needs cpunumber, cpuspeed and
    memory; `tags` are the ROOT disk's storage tags, `encryptroot` its encryption."""
    required("createServiceOffering", p, "name")
    _storage_type(p)
    cpu, speed, memory = int_param(p, "cpunumber"), int_param(p, "cpuspeed"), int_param(p, "memory")
    customized = flag(p, "customized") or (cpu is None and speed is None and memory is None)
    if not customized and (cpu is None or speed is None or memory is None):
        raise m.ParamError("For creating a custom compute offering cpu, cpu speed and memory all should be null")
    if cpu is not None and cpu < 1:
        raise m.ParamError("Failed to create service offering " + p["name"] + ": specify the cpu number value "
                           "between 1 and 2147483647")
    if memory is not None and memory < 32:
        raise m.ParamError("Failed to create service offering " + p["name"] + ": specify the memory value "
                           "between 32 and 2147483647 MB")
    customized_iops = flag(p, "customizediops")
    low, high = _iops(p, customized_iops)
    with model.lock:
        off = model.add_service_offering(
            p["name"], cpu_number=cpu or 0, cpu_speed=speed or 0, memory=memory or 0, min_iops=low, max_iops=high,
            customized_iops=customized_iops, details=details_param(p, "serviceofferingdetails"),
            tags=clean_tags(p.get("tags")), encrypt_root=flag(p, "encryptroot"),
            display_text=p.get("displaytext") or p["name"],
            hypervisor_snapshot_reserve=int_param(p, "hypervisorsnapshotreserve"), created=m.cs_time(),
        )
        model.add_event("SERVICE.OFFERING.CREATE", f"Successfully created service offering {off.name}", off.id,
                        "ServiceOffering")
        return {"serviceoffering": _wire().service_offering_item(model, off)}


def create_disk_offering(model: m.CloudStackModel, p: Params) -> Item:
    """CreateDiskOfferingCmd (synchronous): a size in GB unless customised (not both), fixed or
    customised IOPS, storage `tags`, `encrypt`, `details`."""
    required("createDiskOffering", p, "name")
    _storage_type(p)
    customized = flag(p, "customized")
    size = int_param(p, "disksize", 64)
    if not customized and size is None:
        raise m.ParamError("Disksize is required for a non-customized disk offering")
    if customized and size is not None and size > 0:
        raise m.ParamError("Disksize is not allowed for a customized disk offering")
    if size is not None and not customized and size < 1:
        raise m.ParamError("Please specify a disk size of at least 1 GB.")
    customized_iops = flag(p, "customizediops")
    low, high = _iops(p, customized_iops)
    with model.lock:
        off = model.add_disk_offering(
            p["name"], disk_size_gb=size or 0, min_iops=low, max_iops=high, customized_iops=customized_iops,
            customized=customized, details=details_param(p, "details"), tags=clean_tags(p.get("tags")),
            encrypt=flag(p, "encrypt"), display_text=p.get("displaytext") or p["name"],
            hypervisor_snapshot_reserve=int_param(p, "hypervisorsnapshotreserve"), created=m.cs_time(),
        )
        model.add_event("DISK.OFFERING.CREATE", f"Successfully created disk offering {off.name}", off.id,
                        "DiskOffering")
        return {"diskoffering": _wire().disk_offering_item(model, off)}


def _active(table: dict[str, Any], p: Params, name: str) -> Any:
    off = need(table, p, name)
    if off.state != "Active":
        raise m.no_entity(name, p[name])
    return off


def delete_service_offering(model: m.CloudStackModel, p: Params) -> Item:
    """DeleteServiceOfferingCmd (synchronous): the offering goes Inactive (VMs keep naming it)."""
    required("deleteServiceOffering", p, "id")
    with model.lock:
        off = _active(model.service_offerings, p, "id")
        off.state = "Inactive"
        model.add_event("SERVICE.OFFERING.DELETE", f"Successfully deleted service offering {off.name}", off.id,
                        "ServiceOffering")
    return {"success": True}


def delete_disk_offering(model: m.CloudStackModel, p: Params) -> Item:
    """DeleteDiskOfferingCmd (synchronous): the offering goes Inactive (volumes keep naming it)."""
    required("deleteDiskOffering", p, "id")
    with model.lock:
        off = _active(model.disk_offerings, p, "id")
        off.state = "Inactive"
        model.add_event("DISK.OFFERING.DELETE", f"Successfully deleted disk offering {off.name}", off.id,
                        "DiskOffering")
    return {"success": True}


# ---------------------------------------------------------------------------- resource details


def _detail_owner(model: m.CloudStackModel, resource_type: str, resource_id: str) -> dict[str, str]:
    """The details map of a resource (ResourceMetaDataManagerImpl by ResourceObjectType); an
    unknown uuid is refused as TaggedResourceManagerImpl.getResourceId refuses it."""
    tables: dict[str, dict[str, Any]] = {"DiskOffering": model.disk_offerings,
                                         "ServiceOffering": model.service_offerings}
    table = tables.get(resource_type)
    if table is None:
        raise m.ParamError(f"Resource details of type {resource_type} are not kept by this simulator "
                           f"(only {', '.join(tables)})")
    obj = table.get(resource_id)
    if obj is None:
        raise m.ParamError(f"Unable to find resource by id {resource_id} and type {resource_type}")
    details: dict[str, str] = obj.details
    return details


def _resource_type(p: Params) -> str:
    """ResourceTag.ResourceObjectType by name, in any case."""
    wanted = p["resourcetype"]
    for known in ("DiskOffering", "ServiceOffering", "UserVm", "Volume", "Snapshot", "Template", "StoragePool"):
        if known.lower() == wanted.lower():
            return known
    raise m.ParamError(f"Invalid resource type {wanted}")


def add_resource_detail(model: m.CloudStackModel, p: Params) -> Item:
    """AddResourceDetailCmd (async): each `details[N].key/value` set on the resource."""
    required("addResourceDetail", p, "resourceid", "resourcetype")
    if not details_param(p, "details"):
        raise m.MissingParam("Unable to execute API command addresourcedetail due to missing parameter details")
    rtype = _resource_type(p)
    details = _detail_owner(model, rtype, p["resourceid"])
    new = details_param(p, "details")

    def work() -> Item:
        with model.lock:
            details.update(new)
        return {"success": True}

    return _async(model, "addResourceDetail", work)


def remove_resource_detail(model: m.CloudStackModel, p: Params) -> Item:
    """RemoveResourceDetailCmd (async): one key, or every detail without `key`."""
    required("removeResourceDetail", p, "resourceid", "resourcetype")
    rtype = _resource_type(p)
    details = _detail_owner(model, rtype, p["resourceid"])
    key = p.get("key")

    def work() -> Item:
        with model.lock:
            if key:
                details.pop(key, None)
            else:
                details.clear()
        return {"success": True}

    return _async(model, "removeResourceDetail", work)


def list_resource_details(model: m.CloudStackModel, p: Params) -> list[Item]:
    """ListResourceDetailsCmd: `resourcetype` required; by resource, key, value."""
    required("listResourceDetails", p, "resourcetype")
    rtype = _resource_type(p)
    tables: dict[str, dict[str, Any]] = {"DiskOffering": model.disk_offerings,
                                         "ServiceOffering": model.service_offerings}
    out = []
    for obj in tables.get(rtype, {}).values():
        if p.get("resourceid") and obj.id != p["resourceid"]:
            continue
        for key, value in sorted(obj.details.items()):
            if (p.get("key") and key != p["key"]) or (p.get("value") and value != p["value"]):
                continue
            out.append({"resourceid": obj.id, "resourcetype": rtype, "key": key, "value": value,
                        "fordisplay": True})
    return out


def _wire() -> Any:
    import importlib

    return importlib.import_module("integration.cloudstack_sim.server")


COMMANDS: dict[str, Callable[[m.CloudStackModel, Params], Item]] = {
    "createServiceOffering": create_service_offering,
    "createDiskOffering": create_disk_offering,
    "deleteServiceOffering": delete_service_offering,
    "deleteDiskOffering": delete_disk_offering,
    "addResourceDetail": add_resource_detail,
    "removeResourceDetail": remove_resource_detail,
}
LISTS: dict[str, tuple[str, Callable[[m.CloudStackModel, Params], list[Item]]]] = {
    "listResourceDetails": ("resourcedetail", list_resource_details),
}
