"""The CloudStack simulator's wire: `/client/api`, signatures, envelopes, paging, errors, jobs.

What a client sees is what a real management server sends (ApiServlet, ApiServer,
ParamProcessWorker, BaseListCmd, ApiAsyncJobDispatcher in CloudStack main):

- GET (query string) and POST (form body) both work; a key given twice counts with its first
  value (the query string's before the form body's); parameter names are read lower-cased;
  parameters are verified with signature version 3 (see signing.py), whose control
  parameters (`apiKey`, `signature`, `signatureVersion`, `expires`) are matched in any case;
  a failed check is HTTP 401 with errorcode 401; a request runs as the user whose key signed it
  (the stack's admin key: the root admin; a key from registerUserKeys: that user, callers.py),
  and a command the user's role lacks is refused like an unknown one;
- a command the server does not have is 401 too, in the `errorresponse` envelope (ApiServer
  refuses it while verifying the request);
- answers are `{"<command lower-cased>response": {...}}`; a list is
  `{"count": N, "<item>": [...]}` and an empty one `{}`; `count` is the total, not the page;
- paging (BaseListCmd): no paging parameters means at most default.page.size (500) items;
  `pagesize` needs `page` and `page` needs `pagesize` (431), except `pagesize=-1` alone, which
  lists everything (`page` with it is 431); `page` <= 0 is the first page;
- errors: HTTP status = `errorcode` (431 bad parameter, 530 internal), body with `errorcode`,
  `cserrorcode` and `errortext`; a uuid that names nothing is 431 / cserrorcode 9999
  "Unable to execute API command <cmd> due to invalid value. Invalid parameter ...";
- async commands answer `{"jobid": ...}`; `queryAsyncJobResult` reports jobstatus 0/1/2; a failed
  job's result has `errorcode` (431 for a bad parameter) and `errortext`, no `cserrorcode`.

The secret keys live only in this process (never in the state file, never logged).
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from cloudstack_storpool.httpjson import end_headers_with
from integration.cloudstack_sim import callers, catalog, identity, network, offerings, storage_commands
from integration.cloudstack_sim import model as m
from integration.cloudstack_sim import params as params_mod
from integration.cloudstack_sim.network import GUEST_NETWORK_NAME, guest_network_id
from integration.cloudstack_sim.signing import SignatureError, verify_request

log = logging.getLogger(__name__)

MAX_PAGE_SIZE = 500

Params = Mapping[str, str]
Item = dict[str, Any]


@dataclass(frozen=True)
class ListCommand:
    item: str
    produce: Callable[[m.CloudStackModel, Params], list[Item]]


@dataclass(frozen=True)
class Command:
    run: Callable[[m.CloudStackModel, Params], Item]
    mutates: bool = False


# ---------------------------------------------------------------------------- parameter helpers


_required = params_mod.required
_flag = params_mod.flag
_int = params_mod.int_param


def _check_ids(params: Params, checks: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
    """UUID parameters are translated before the command runs: unknown ones are 431."""
    for name, table in checks:
        value = params.get(name)
        if value and value not in table:
            raise m.no_entity(name, value)


def _visible(params: Params, account: str) -> bool:
    """Admins see other accounts' resources only with listall=true or account=...; a user of the
    `User` role sees its own account's, whatever it asks (buildACLSearchParameters)."""
    caller = callers.current()
    if not caller.is_root_admin:
        return account == caller.account
    if params.get("id"):
        return True
    if params.get("account"):
        return account == params["account"]
    return _flag(params, "listall") or account == "admin"


def _opt(item: Item) -> Item:
    """Gson leaves out nulls."""
    return {k: v for k, v in item.items() if v is not None}


def _tag_items(resource_type: str, resource_id: str, tags: Mapping[str, str], account: str) -> list[Item]:
    return [
        {"key": k, "value": v, "resourcetype": resource_type, "resourceid": resource_id,
         "account": account, "domainid": m.seeded_id("domain", "ROOT"), "domain": "ROOT"}
        for k, v in sorted(tags.items())
    ]


# ---------------------------------------------------------------------------- renderers


def _zone(model: m.CloudStackModel, z: m.Zone) -> Item:
    """ZoneResponse: a Core zone (not Edge) with security groups."""
    return {"id": z.id, "name": z.name, "allocationstate": "Enabled", "networktype": "Advanced", "type": "Core",
            "securitygroupsenabled": True, "localstorageenabled": False}


_HIDDEN_CLUSTER_DETAILS = ("username", "password")
"""ClusterResponse.setResourceDetails drops these from the cluster's details."""


def _cluster(model: m.CloudStackModel, c: m.Cluster) -> Item:
    """ClusterResponse as ApiResponseHelper.createClusterResponse fills it: `resourcedetails` is
    every row of the cluster's details (an object, `{}` when there is none), credentials left out."""
    zone = model.zones.get(c.zone_id)
    details = {k: v for k, v in model.cluster_details(c.id).items() if k not in _HIDDEN_CLUSTER_DETAILS}
    return {"id": c.id, "name": c.name, "zoneid": c.zone_id, "zonename": zone.name if zone else None,
            "hypervisortype": "KVM", "clustertype": "CloudManaged", "allocationstate": "Enabled",
            "managedstate": "Managed", "resourcedetails": details}


_HOST_DETAILS = ("all", "capacity", "events", "stats", "min")
"""ApiConstants.HostDetails: what listHosts' `details` may ask for (ListHostsCmd.getDetails)."""


def _host(model: m.CloudStackModel, h: m.Host, with_details: bool = True) -> Item:
    """HostResponse as HostJoinDaoImpl fills it. No `parent`: HostResponse has no such field, so
    the client id the StorPool host listener keeps in `host.parent` never reaches the API; the
    host details (`host_details`) only with `details=all` (the default), without username and
    password (HostResponse.setDetails)."""
    cluster = model.clusters.get(h.cluster_id)
    zone = model.zones.get(h.zone_id)
    details = {k: v for k, v in h.details.items() if k not in ("username", "password")}
    return _opt({
        "id": h.id, "name": h.name, "ipaddress": h.ip_address, "clusterid": h.cluster_id,
        "clustername": cluster.name if cluster else None, "zoneid": h.zone_id,
        "zonename": zone.name if zone else None, "state": h.state, "resourcestate": h.resource_state,
        "type": "Routing", "hypervisor": "KVM", "details": details if with_details else None,
        "hostha": {"haenable": h.ha_enabled, "hastate": h.ha_state, "haprovider": "kvmhaprovider"},
    })


def _pool(model: m.CloudStackModel, p: m.StoragePool) -> Item:
    zone = model.zones.get(p.zone_id)
    return {"id": p.id, "name": p.name, "zoneid": p.zone_id, "zonename": zone.name if zone else None,
            "provider": p.provider, "scope": p.scope, "type": p.type, "path": p.path, "ipaddress": "localhost",
            "state": p.state, "hypervisor": "KVM", "disksizetotal": p.capacity, "disksizeused": p.used,
            "tags": p.tags, "overprovisionfactor": "2.0"}


def _template(model: m.CloudStackModel, t: m.Template) -> Item:
    zone = model.zones.get(t.zone_id)
    return {"id": t.id, "name": t.name, "displaytext": t.name, "size": t.size, "format": t.format,
            "isready": t.ready, "status": "Download Complete" if t.ready else "Downloading",
            "zoneid": t.zone_id, "zonename": zone.name if zone else None, "templatetype": "USER",
            "hypervisor": "KVM", "isfeatured": t.featured, "ispublic": t.public, "account": t.account,
            "crossZones": False, "created": t.created, "ostypename": catalog.DEFAULT_OS,
            "ostypeid": catalog.os_type_id(catalog.DEFAULT_OS),
            **({"projectid": t.project_id} if t.project_id else {})}


def _vm(model: m.CloudStackModel, v: m.VirtualMachine) -> Item:
    host = model.hosts.get(v.host_id or "")
    tpl = model.templates.get(v.template_id)
    off = model.service_offerings.get(v.service_offering_id)
    # UserVmResponse has hostid/hostname (while the VM runs) and no last host.
    return _opt({
        "id": v.id, "name": v.name, "displayname": v.name, "instancename": v.instance_name,
        "state": v.state, "hostid": v.host_id, "hostname": host.name if host else None,
        "zoneid": v.zone_id, "templateid": v.template_id,
        "templatename": tpl.name if tpl else None, "serviceofferingid": v.service_offering_id,
        "serviceofferingname": off.name if off else None, "hypervisor": "KVM", "account": v.account,
        "domainid": m.seeded_id("domain", "ROOT"), "domain": "ROOT",
        "created": v.created, "tags": _tag_items("UserVm", v.id, v.tags, v.account),
        "nic": [_nic(model, v)] if v.ip_address else None,
        "securitygroup": _vm_security_groups(model, v),
    })


def _nic(model: m.CloudStackModel, v: m.VirtualMachine) -> Item:
    """NicResponse of the VM's one NIC on the zone's guest network: its own loopback address."""
    return {"id": m.seeded_id("nic", v.id), "networkid": guest_network_id(v.zone_id),
            "networkname": GUEST_NETWORK_NAME, "ipaddress": v.ip_address, "macaddress": v.mac_address,
            "netmask": "255.0.0.0", "gateway": "127.0.0.1", "isdefault": True, "traffictype": "Guest",
            "type": "Shared", "deviceid": "0", "virtualmachineid": v.id}


def _vm_security_groups(model: m.CloudStackModel, v: m.VirtualMachine) -> list[Item]:
    return [{"id": g.id, "name": g.name, "description": g.description}
            for g in model.security_groups.values() if g.account == v.account and g.name == "default"]


def _volume(model: m.CloudStackModel, v: m.Volume) -> Item:
    pool = model.storage_pools.get(v.storage_id or "")
    vm = model.vms.get(v.vm_id or "")
    return _opt({
        "id": v.id, "name": v.name, "zoneid": v.zone_id, "type": v.type, "size": v.size, "path": v.path,
        "storageid": v.storage_id, "storage": pool.name if pool else None, "virtualmachineid": v.vm_id,
        "vmname": vm.name if vm else None, "vmstate": vm.state if vm else None, "deviceid": v.device_id,
        "diskofferingid": v.disk_offering_id, "miniops": v.min_iops, "maxiops": v.max_iops,
        "state": v.state, "account": v.account, "created": v.created, "hypervisor": "KVM",
        "domainid": m.seeded_id("domain", "ROOT"), "domain": "ROOT", "encryptformat": v.encrypt_format,
    })


def _snapshot(model: m.CloudStackModel, s: m.Snapshot) -> Item:
    vol = model.volumes.get(s.volume_id)
    return _opt({"id": s.id, "name": s.name, "volumeid": s.volume_id, "volumename": vol.name if vol else None,
                 "volumetype": vol.type if vol else None, "zoneid": s.zone_id, "state": s.state,
                 "snapshottype": s.snapshot_type, "intervaltype": s.snapshot_type, "created": s.created,
                 "physicalsize": s.physical_size, "virtualsize": s.size or None, "account": s.account,
                 "domainid": m.seeded_id("domain", "ROOT"), "domain": "ROOT"})


def _vm_snapshot(model: m.CloudStackModel, s: m.VMSnapshot) -> Item:
    return _opt({"id": s.id, "name": s.name, "displayname": s.name, "virtualmachineid": s.vm_id,
                 "zoneid": s.zone_id, "state": s.state, "type": s.type, "current": s.current,
                 "parent": s.parent_id, "description": s.description, "created": s.created,
                 "account": s.account})


def _disk_offering(model: m.CloudStackModel, o: m.DiskOffering) -> Item:
    """DiskOfferingResponse (DiskOfferingJoinDaoImpl): storage tags in `tags`, details in `details`."""
    return _opt({"id": o.id, "name": o.name, "displaytext": o.display_text or o.name, "disksize": o.disk_size_gb,
                 "miniops": o.min_iops, "maxiops": o.max_iops, "iscustomizediops": o.customized_iops,
                 "iscustomized": o.customized, "storagetype": "shared", "provisioningtype": "thin",
                 "tags": o.tags or None, "encrypt": o.encrypt, "hypervisorsnapshotreserve": o.hypervisor_snapshot_reserve,
                 "created": o.created or None, "state": o.state, "displayoffering": True,
                 "details": dict(o.details) if o.details else None})


def _service_offering(model: m.CloudStackModel, o: m.ServiceOffering) -> Item:
    """ServiceOfferingResponse (ServiceOfferingJoinDaoImpl): the ROOT disk's storage tags in
    `storagetags`, details in `serviceofferingdetails`."""
    return _opt({"id": o.id, "name": o.name, "displaytext": o.display_text or o.name, "cpunumber": o.cpu_number,
                 "cpuspeed": o.cpu_speed, "memory": o.memory, "miniops": o.min_iops, "maxiops": o.max_iops,
                 "iscustomizediops": o.customized_iops, "storagetype": "shared", "storagetags": o.tags or None,
                 "encryptroot": o.encrypt_root, "hypervisorsnapshotreserve": o.hypervisor_snapshot_reserve,
                 "iscustomized": not (o.cpu_number and o.cpu_speed and o.memory), "created": o.created or None,
                 "state": o.state, "issystem": False, "provisioningtype": "thin",
                 "serviceofferingdetails": dict(o.details) if o.details else None})


disk_offering_item = _disk_offering
service_offering_item = _service_offering


def _event(model: m.CloudStackModel, e: m.Event) -> Item:
    return _opt({"id": e.id, "type": e.type, "level": e.level, "description": e.description,
                 "state": e.state, "created": m.cs_time(e.created), "username": "admin",
                 "account": e.account, "domain": "ROOT", "domainid": m.seeded_id("domain", "ROOT"),
                 "resourceid": e.resource_id, "resourcetype": e.resource_type})


def _config(entry: m.ConfigEntry, value: str | None, scope: str | None) -> Item:
    return _opt({"name": entry.name, "value": value, "defaultvalue": entry.default,
                 "category": entry.category, "description": entry.description,
                 "isdynamic": entry.dynamic, "scope": scope, "component": entry.component})


# ---------------------------------------------------------------------------- list commands


def _filter(items: Iterable[Any], params: Params, **attr_by_param: str) -> list[Any]:
    out = []
    for obj in items:
        keep = True
        for param, attr in attr_by_param.items():
            wanted = params.get(param)
            if wanted and str(getattr(obj, attr)) != wanted:
                keep = False
                break
        if keep:
            out.append(obj)
    return out


def list_zones(model: m.CloudStackModel, p: Params) -> list[Item]:
    _check_ids(p, [("id", model.zones)])
    return [_zone(model, z) for z in _filter(model.zones.values(), p, id="id", name="name")]


def list_clusters(model: m.CloudStackModel, p: Params) -> list[Item]:
    _check_ids(p, [("id", model.clusters), ("zoneid", model.zones)])
    found = _filter(model.clusters.values(), p, id="id", name="name", zoneid="zone_id")
    return [_cluster(model, c) for c in found]


def list_hosts(model: m.CloudStackModel, p: Params) -> list[Item]:
    _check_ids(p, [("id", model.hosts), ("zoneid", model.zones), ("clusterid", model.clusters)])
    if p.get("type") and p["type"].lower() != "routing":
        return []
    asked = [d.strip() for d in p.get("details", "").split(",") if d.strip()]
    bad = [d for d in asked if d not in _HOST_DETAILS]
    if bad:
        raise m.ParamError("The details parameter contains a non permitted value. The allowed values are "
                           f"[{', '.join(_HOST_DETAILS)}]")
    found = _filter(model.hosts.values(), p, id="id", name="name", zoneid="zone_id", clusterid="cluster_id",
                    state="state")
    return [_host(model, h, not asked or "all" in asked) for h in found]


def list_storage_pools(model: m.CloudStackModel, p: Params) -> list[Item]:
    _check_ids(p, [("id", model.storage_pools), ("zoneid", model.zones)])
    found = _filter(model.storage_pools.values(), p, id="id", name="name", zoneid="zone_id")
    return [_pool(model, x) for x in found]


_TEMPLATE_FILTERS = {"featured", "self", "selfexecutable", "sharedexecutable", "executable", "community", "all"}


def list_templates(model: m.CloudStackModel, p: Params) -> list[Item]:
    _required("listTemplates", p, "templatefilter")
    flt = p["templatefilter"]
    if flt not in _TEMPLATE_FILTERS:
        raise m.ParamError(f"Unable to execute API command listtemplates due to invalid value. Invalid "
                           f"parameter templatefilter value={flt}")
    _check_ids(p, [("id", model.templates), ("zoneid", model.zones)])
    found = _filter(model.templates.values(), p, id="id", name="name", zoneid="zone_id")
    if not p.get("id"):
        # AccountManagerImpl.buildACLSearchParameters: without an id or a projectid a listing
        # skips project-owned templates; projectid=-1 lists only them. By id, any template.
        project = p.get("projectid")
        found = [t for t in found if (t.project_id != "" if project == "-1" else t.project_id == (project or ""))]
    if flt == "featured":
        found = [t for t in found if t.featured]
    elif flt in ("self", "selfexecutable"):
        found = [t for t in found if t.account == callers.current().account]
    elif flt in ("community", "executable"):
        found = [t for t in found if t.public or t.account == callers.current().account]
    if not callers.current().is_root_admin:  # a user sees public templates and its own
        found = [t for t in found if t.public or t.account == callers.current().account]
    if flt.endswith("executable"):
        found = [t for t in found if t.ready]
    return [_template(model, t) for t in found]


def list_volumes(model: m.CloudStackModel, p: Params) -> list[Item]:
    _check_ids(p, [("id", model.volumes), ("virtualmachineid", model.vms), ("storageid", model.storage_pools),
                   ("zoneid", model.zones)])
    found = _filter(model.volumes.values(), p, id="id", name="name", virtualmachineid="vm_id",
                    storageid="storage_id", type="type", zoneid="zone_id")
    # A user's listing leaves destroyed volumes out (ListVolumesCmd for a non-admin caller).
    hidden = () if callers.current().is_root_admin else ("Destroy", "Expunged")
    return [_volume(model, v) for v in found if _visible(p, v.account) and v.state not in hidden]


def _snapshot_stores(model: m.CloudStackModel, s: m.Snapshot) -> list[tuple[str, str, str, str]]:
    """Where a snapshot is (snapshot_store_ref): (zone id, store id, store name, role) for its
    primary pool, its image-store copy, and its copies on other zones' primary storage."""
    out = []
    if s.storage_id and s.storage_id in model.storage_pools:
        pool = model.storage_pools[s.storage_id]
        out.append((pool.zone_id, pool.id, pool.name, "Primary"))
    if s.backup_path:
        out.append((s.zone_id, m.seeded_id("imagestore", "secondary"), "secondary", "Image"))
    for pid in s.copies:
        if pid in model.storage_pools:
            pool = model.storage_pools[pid]
            out.append((pool.zone_id, pool.id, pool.name, "Primary"))
    return out


def list_snapshots(model: m.CloudStackModel, p: Params) -> list[Item]:
    """ListSnapshotsCmd: `zoneid` matches a snapshot held in that zone (snapshot_zone_ref);
    `showunique=false` lists it once per store, with that store's zone and `datastore*` fields
    (SnapshotJoinDaoImpl.newSnapshotResponse)."""
    if p.get("id") in model.removed_snapshots:
        return []  # a removed snapshot's uuid still translates: nothing to list
    _check_ids(p, [("id", model.snapshots), ("volumeid", model.volumes), ("zoneid", model.zones)])
    found = _filter(model.snapshots.values(), p, id="id", name="name", volumeid="volume_id")
    unique = str(p.get("showunique", "true")).lower() != "false"
    out = []
    for s in found:
        if not _visible(p, s.account):
            continue
        stores = _snapshot_stores(model, s)
        if p.get("zoneid") and p["zoneid"] not in {z for z, *_ in stores} | ({s.zone_id} if not stores else set()):
            continue
        if unique or not stores:
            out.append(_snapshot(model, s))
            continue
        for zone_id, store_id, store_name, role in stores:
            if p.get("zoneid") and zone_id != p["zoneid"]:
                continue
            zone = model.zones.get(zone_id)
            out.append({**_snapshot(model, s), "zoneid": zone_id, "zonename": zone.name if zone else None,
                        "datastoreid": store_id, "datastorename": store_name, "datastoretype": role,
                        "datastorestate": "Ready"})
    return out


def list_vm_snapshots(model: m.CloudStackModel, p: Params) -> list[Item]:
    _check_ids(p, [("vmsnapshotid", model.vm_snapshots), ("virtualmachineid", model.vms)])
    found = _filter(model.vm_snapshots.values(), p, vmsnapshotid="id", name="name", virtualmachineid="vm_id",
                    state="state")
    return [_vm_snapshot(model, s) for s in found if _visible(p, s.account)]


def _tag_filters(p: Params) -> dict[str, str]:
    """`tags[0].key=k&tags[0].value=v` pairs, as the `cs` client spells a list of maps."""
    keys: dict[str, str] = {}
    values: dict[str, str] = {}
    for name, value in p.items():
        if name.startswith("tags[") and "]." in name:
            index, _, field = name[5:].partition("].")
            (keys if field == "key" else values)[index] = value
    return {keys[i]: values.get(i, "") for i in keys}


def list_vms(model: m.CloudStackModel, p: Params) -> list[Item]:
    _check_ids(p, [("id", model.vms), ("hostid", model.hosts), ("zoneid", model.zones)])
    found = _filter(model.vms.values(), p, id="id", name="name", hostid="host_id", zoneid="zone_id",
                    state="state")
    wanted_tags = _tag_filters(p)
    found = [v for v in found if all(v.tags.get(k) == val for k, val in wanted_tags.items())]
    return [_vm(model, v) for v in found if _visible(p, v.account)]


def list_disk_offerings(model: m.CloudStackModel, p: Params) -> list[Item]:
    _check_ids(p, [("id", model.disk_offerings)])
    found = _filter(model.disk_offerings.values(), p, id="id", name="name")
    return [_disk_offering(model, o) for o in found if o.state == "Active"]


def list_service_offerings(model: m.CloudStackModel, p: Params) -> list[Item]:
    _check_ids(p, [("id", model.service_offerings)])
    found = _filter(model.service_offerings.values(), p, id="id", name="name")
    return [_service_offering(model, o) for o in found if o.state == "Active"]


def _config_scope(p: Params) -> tuple[str, str | None, str | None]:
    given = [(param, scope) for param, scope in m.SCOPE_PARAMS.items() if p.get(param)]
    if len(given) > 1:
        raise m.ParamError("cannot handle multiple IDs, provide only one ID corresponding to the scope")
    if not given:
        return "global", None, None
    param, scope = given[0]
    return scope, p[param], param


def list_configurations(model: m.CloudStackModel, p: Params) -> list[Item]:
    scope, scope_id, param = _config_scope(p)
    if scope_id is not None and param is not None:
        model._scope_id_known(scope, scope_id, param)
    name = p.get("name", "").lower()
    keyword = p.get("keyword", "").lower()
    out = []
    for entry in sorted(model.configs.values(), key=lambda e: e.name):
        # `name` is a substring match (SQL LIKE %name%), as on the real server.
        if name and name not in entry.name.lower():
            continue
        if keyword and keyword not in entry.name.lower():
            continue
        if p.get("category") and entry.category != p["category"]:
            continue
        if scope == "global":
            out.append(_config(entry, entry.value, None))
        elif entry.scope == scope:
            out.append(_config(entry, model.config_value(entry.name, scope, scope_id), scope))
    return out


def _parse_date(raw: str) -> float:
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d"):
        try:
            return datetime.strptime(raw, fmt).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    raise m.ParamError(f"Unable to parse date {raw} for command listEvents, please pass dates in the format "
                       "mentioned in the api documentation")


def list_events(model: m.CloudStackModel, p: Params) -> list[Item]:
    found = _filter(model.events.values(), p, id="id", type="type", level="level")
    if p.get("startdate"):
        start = _parse_date(p["startdate"])
        found = [e for e in found if e.created >= start]
    if p.get("enddate"):
        end = _parse_date(p["enddate"])
        found = [e for e in found if e.created <= end]
    if p.get("keyword"):
        kw = p["keyword"].lower()
        found = [e for e in found if kw in e.description.lower() or kw in e.type.lower()]
    found.sort(key=lambda e: e.created, reverse=True)
    return [_event(model, e) for e in found]


def list_tags(model: m.CloudStackModel, p: Params) -> list[Item]:
    rtype = p.get("resourcetype", "")
    out: list[Item] = []
    if rtype in ("", "UserVm"):
        for vm in model.vms.values():
            if p.get("resourceid") and vm.id != p["resourceid"]:
                continue
            if not _visible(p, vm.account) and not p.get("resourceid"):
                continue
            out.extend(_tag_items("UserVm", vm.id, vm.tags, vm.account))
    if p.get("key"):
        out = [t for t in out if t["key"] == p["key"]]
    if p.get("value"):
        out = [t for t in out if t["value"] == p["value"]]
    return out


def list_alerts(model: m.CloudStackModel, p: Params) -> list[Item]:
    found = _filter(model.alerts.values(), p, id="id", name="name", type="type")
    found.sort(key=lambda a: a.sent, reverse=True)
    return [{"id": a.id, "type": a.type, "name": a.name, "description": a.description,
             "sent": m.cs_time(a.sent)} for a in found]


LIST_COMMANDS: dict[str, ListCommand] = {
    "listZones": ListCommand("zone", list_zones),
    "listClusters": ListCommand("cluster", list_clusters),
    "listHosts": ListCommand("host", list_hosts),
    "listStoragePools": ListCommand("storagepool", list_storage_pools),
    "listTemplates": ListCommand("template", list_templates),
    "listVolumes": ListCommand("volume", list_volumes),
    "listSnapshots": ListCommand("snapshot", list_snapshots),
    "listVMSnapshot": ListCommand("vmSnapshot", list_vm_snapshots),
    "listVirtualMachines": ListCommand("virtualmachine", list_vms),
    "listDiskOfferings": ListCommand("diskoffering", list_disk_offerings),
    "listServiceOfferings": ListCommand("serviceoffering", list_service_offerings),
    "listConfigurations": ListCommand("configuration", list_configurations),
    "listEvents": ListCommand("event", list_events),
    "listTags": ListCommand("tag", list_tags),
    "listAlerts": ListCommand("alert", list_alerts),
}
for _lists in (identity.LISTS, offerings.LISTS, catalog.LISTS):
    LIST_COMMANDS.update({name: ListCommand(item, produce) for name, (item, produce) in _lists.items()})


# ---------------------------------------------------------------------------- other commands


def update_configuration(model: m.CloudStackModel, p: Params) -> Item:
    _required("updateConfiguration", p, "name")
    for id_param, id_scope in m.SCOPE_PARAMS.items():  # uuids are translated before the command runs
        if p.get(id_param):
            model._scope_id_known(id_scope, p[id_param], id_param)
    scope, scope_id, param = _config_scope(p)
    entry = model.set_configuration(p["name"], p.get("value"), scope, scope_id, param=param)
    value = model.config_value(entry.name, scope, scope_id)
    return {"configuration": _config(entry, value, None if scope == "global" else scope)}


_JOB_CLASSES = {
    "deletetemplate": "org.apache.cloudstack.api.command.user.template.DeleteTemplateCmd",
    "generatealert": "org.apache.cloudstack.api.command.admin.alert.GenerateAlertCmd",
}


def delete_template(model: m.CloudStackModel, p: Params) -> Item:
    _required("deleteTemplate", p, "id")
    _check_ids(p, [("id", model.templates), ("zoneid", model.zones)])
    tid = p["id"]

    def work() -> Item:
        model.delete_template(tid, forced=_flag(p, "forced"))
        return {"success": True}

    job = model.run_job("deleteTemplate", work, instance_type="Template", instance_id=tid)
    return {"jobid": job.id}


def generate_alert(model: m.CloudStackModel, p: Params) -> Item:
    _required("generateAlert", p, "type", "name", "description")
    alert_type = _int(p, "type")
    assert alert_type is not None
    if not -32768 <= alert_type <= 32767:
        raise m.ParamError(f"Unable to execute API command generatealert due to invalid value. Invalid "
                           f"parameter type value={alert_type}")
    _check_ids(p, [("zoneid", model.zones)])

    def work() -> Item:
        m.check_alert_type(alert_type, p["name"])
        model.add_alert(alert_type, p["name"], p["description"], p.get("zoneid"))
        return {"success": True}

    return {"jobid": model.run_job("generateAlert", work).id}


def query_async_job_result(model: m.CloudStackModel, p: Params) -> Item:
    _required("queryAsyncJobResult", p, "jobid")
    job = model.jobs.get(p["jobid"])
    if job is None:
        raise m.no_entity("jobid", p["jobid"])
    caller = callers.current()
    owner_account = job.account_id or callers.ADMIN.account_id
    if caller.role_type == "User" and caller.account_id != owner_account:
        # Regular users see only the jobs they own (QueryAsyncJobResult's permission check).
        raise m.PermissionDenied(f"Account {caller.account} is not authorized to see job id={job.id}")
    import time

    done = time.time() >= job.ready_at
    out: Item = {
        "jobid": job.id, "accountid": owner_account, "userid": job.user_id or callers.ADMIN.user_id,
        "cmd": _JOB_CLASSES.get(job.command.lower(), job.command), "created": m.cs_time(job.created),
        "jobprocstatus": 0, "jobstatus": job.status if done else 0, "jobresultcode": job.result_code if done else 0,
        "jobresulttype": "object",
    }
    if job.instance_type:
        out["jobinstancetype"] = job.instance_type
        out["jobinstanceid"] = job.instance_id
    if done:
        out["jobresult"] = job.result
        out["completed"] = m.cs_time(job.ready_at)
    return out


COMMANDS: dict[str, Command] = {
    "updateConfiguration": Command(update_configuration, mutates=True),
    "deleteTemplate": Command(delete_template, mutates=True),
    "generateAlert": Command(generate_alert, mutates=True),
    "queryAsyncJobResult": Command(query_async_job_result),
}


STORAGE_COMMANDS = storage_commands.HANDLERS
"""Users' storage commands (storage_commands.py): they call the storage plugin. Known commands
like any other; `dispatch` runs them before taking the model's lock."""
COMMANDS.update({name: Command(run, mutates=True) for name, run in STORAGE_COMMANDS.items()})
for _commands in (identity.COMMANDS, offerings.COMMANDS, catalog.COMMANDS, network.COMMANDS):
    COMMANDS.update({name: Command(run, mutates=True) for name, run in _commands.items()})

ASYNC_COMMANDS = frozenset({
    "deployVirtualMachine", "startVirtualMachine", "stopVirtualMachine", "rebootVirtualMachine",
    "migrateVirtualMachine", "destroyVirtualMachine", "expungeVirtualMachine", "createTags", "deleteTags",
    "createVolume", "attachVolume", "detachVolume", "destroyVolume", "resizeVolume", "changeOfferingForVolume", "migrateVolume",
    "migrateVirtualMachineWithVolume",
    "createSnapshot", "deleteSnapshot", "revertSnapshot", "copySnapshot", "createTemplate", "deleteTemplate", "createVMSnapshot",
    "revertToVMSnapshot", "deleteVMSnapshot", "generateAlert", "deleteAccount", "authorizeSecurityGroupIngress",
    "addResourceDetail", "removeResourceDetail", "extractVolume", "associateIpAddress",
})
"""The commands here that CloudStack runs as async jobs (their @APICommand classes are BaseAsyncCmd)."""


def list_apis(model: m.CloudStackModel, p: Params) -> list[Item]:
    """ListApisCmd (ApiDiscoveryServiceImpl): one entry per command this server has, by `name`.
    The simulator knows its commands' names and whether they are async, not their parameter
    annotations: `params` and `response` are left empty."""
    names = sorted(set(LIST_COMMANDS) | set(COMMANDS) | {"listApis"})
    if p.get("name"):
        if p["name"] not in names:
            raise m.ParamError("Api Discovery plugin was unable to find an api by that name or process any apis")
        names = [p["name"]]
    return [{"name": n, "description": "", "isasync": n in ASYNC_COMMANDS, "related": "", "params": [],
             "response": []} for n in names]


LIST_COMMANDS["listApis"] = ListCommand("api", list_apis)


# ---------------------------------------------------------------------------- dispatch


def _page(items: list[Item], p: Params) -> tuple[list[Item], int]:
    """ParamProcessWorker's and BaseListCmd's paging rules."""
    page = _int(p, "page")
    pagesize = _int(p, "pagesize")
    if page is None and pagesize is not None and pagesize != -1:
        raise m.MissingParam('"page" parameter is required when "pagesize" is specified')
    if pagesize is None and page is not None:
        raise m.MissingParam('"pagesize" parameter is required when "page" is specified')
    if pagesize is not None and pagesize > MAX_PAGE_SIZE:
        raise m.ParamError(f"Page size can't exceed max allowed page size value: {MAX_PAGE_SIZE}")
    if pagesize == -1 and page is not None:
        raise m.ParamError("Can't specify page parameter when pagesize is -1 (Unlimited)")
    total = len(items)
    if pagesize == -1:
        return items, total
    size = MAX_PAGE_SIZE if pagesize is None else max(pagesize, 0)
    start = size * (page - 1) if page is not None and page > 0 else 0
    return items[start : start + size], total


def _own_job(model: m.CloudStackModel, result: Item) -> None:
    """The job a command started belongs to its caller (AsyncJobVO's user and account)."""
    job = model.jobs.get(str(result.get("jobid", "")))
    if job is not None:
        caller = callers.current()
        job.account_id, job.user_id = caller.account_id, caller.user_id


def dispatch(model: m.CloudStackModel, command: str, params: Params) -> tuple[int, Item]:
    """Run one command; returns (HTTP status, body inside the `<cmd>response` envelope)."""
    try:
        if command not in LIST_COMMANDS:
            callers.check_entities(model, dict(params))
        storage = STORAGE_COMMANDS.get(command)
        if storage is not None:
            # Outside the lock: the plugin these commands call asks this API while it works.
            result = storage(model, params)
            _own_job(model, result)
            model.save()
            return 200, result
        with model.lock:
            if command in LIST_COMMANDS:
                spec = LIST_COMMANDS[command]
                items, total = _page(spec.produce(model, params), params)
                if total == 0:
                    return 200, {}
                body: Item = {"count": total}
                if items:
                    body[spec.item] = items
                return 200, body
            if command in COMMANDS:
                cmd = COMMANDS[command]
                result = cmd.run(model, params)
                _own_job(model, result)
                if cmd.mutates:
                    model.save()
                return 200, result
        raise m.Unsupported(f"The given command {command} does not exist or it is not available for user")
    except m.ApiError as exc:
        text = exc.text
        if isinstance(exc, m.InvalidValue):
            text = f"Unable to execute API command {command.lower()} due to invalid value. {text}"
        return exc.code, {"uuidList": [], "errorcode": exc.code, "cserrorcode": exc.cserrorcode, "errortext": text}


# ---------------------------------------------------------------------------- HTTP


_CONTROL_PARAMS = frozenset({"signature", "apikey", "response", "signatureversion", "expires", "command"})
"""Parameters of the request itself, not of the command (matched in any case)."""


class SimHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], model: m.CloudStackModel, credentials: dict[str, str]) -> None:
        super().__init__(address, _Handler)
        self.model = model
        self._credentials = dict(credentials)  # fixed at start: read by every handler thread, never written

    def secret_for_key(self, api_key: str) -> str | None:
        """The secret of the stack's admin key, else of a user's key (registerUserKeys)."""
        if api_key in self._credentials:
            return self._credentials[api_key]
        found = self.model.user_by_api_key(api_key)
        return found[1] if found else None

    def caller_for_key(self, api_key: str) -> callers.Caller | None:
        """Who signed with `api_key`: the root admin for the stack's keys, else the key's user
        (None once the user or its account is gone)."""
        if api_key in self._credentials:
            return callers.ADMIN
        found = self.model.user_by_api_key(api_key)
        return callers.caller_of(self.model, found[0]) if found else None

    @property
    def endpoint(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/client/api"


class _Handler(BaseHTTPRequestHandler):
    server: SimHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "CloudStackSim/1.0"
    disable_nagle_algorithm = True  # with one write per reply: no delayed-ACK stall on keep-alive

    def log_message(self, format: str, *args: Any) -> None:
        # The default logs the full request line: keep query strings (keys, signatures) out.
        log.debug("%s %s", self.command, urlsplit(self.path).path)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _send(self, status: int, payload: Item | str, content_type: str = "application/json; charset=UTF-8") -> None:
        data = (payload if isinstance(payload, str) else json.dumps(payload)).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        end_headers_with(self, data)

    def _handle(self) -> None:
        url = urlsplit(self.path)
        body = b""
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            body = self.rfile.read(length)
        if url.path.rstrip("/") != "/client/api":
            self._send(404, "<html><body>Not Found</body></html>", "text/html")
            return
        pairs = parse_qsl(url.query, keep_blank_values=True)
        if self.command == "POST" and body:
            ctype = self.headers.get("Content-Type", "")
            if ctype.startswith("application/x-www-form-urlencoded"):
                pairs += parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True)
        params: dict[str, str] = {}
        for key, value in pairs:  # a key given twice: its first value counts (ApiServlet)
            params.setdefault(key, value)
        command = params.get("command", "")
        known = command in LIST_COMMANDS or command in COMMANDS
        envelope = f"{command.lower()}response" if known else "errorresponse"
        try:
            if not known:  # ApiServer.verifyRequest refuses it before looking at the signature
                raise SignatureError(f"unknown command {command!r}")
            caller = self.server.caller_for_key(verify_request(params, self.server.secret_for_key))
            if caller is None:
                raise SignatureError("the key's user is gone")
            if not callers.command_available(caller, command):  # the role's API checker
                raise SignatureError(f"{command!r} is not available to role {caller.role_type}")
        except SignatureError as exc:
            log.info("refused %s: %s", command or "(no command)", exc)
            self._send(401, {envelope: {"uuidList": [], "errorcode": 401,
                                        "errortext": "unable to verify user credentials and/or request signature"}})
            return
        # CloudStack reads a command's parameters by their lower-cased names (ApiServer).
        clean: dict[str, str] = {}
        for k, v in params.items():
            if k.lower() not in _CONTROL_PARAMS:
                clean.setdefault(k.lower(), v)
        model = self.server.model
        model.record_call(command, clean, self.command)
        with callers.acting_as(caller):
            status, result = dispatch(model, command, clean)
        self._send(status, {envelope: result})


def make_server(
    model: m.CloudStackModel, credentials: dict[str, str], host: str = "127.0.0.1", port: int = 0
) -> SimHTTPServer:
    """Bind (port 0: a free port). Only loopback addresses: the simulator has no business elsewhere."""
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"the simulator listens on loopback only, not {host}")
    return SimHTTPServer((host, port), model, credentials)
