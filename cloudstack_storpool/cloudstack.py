"""The CloudStack facade: the one module in the project that names CloudStack API commands.

Everything the driver, the heartbeat and the settings need from CloudStack goes through
`CloudStackClient`, which answers typed, frozen objects instead of raw response dicts, so that
a renamed response field is fixed here once. It wraps the `cs` client (paging with
`fetch_list`, async jobs with `fetch_result`) with three corrections:

- **Signing that a real server accepts.** `cs` 5.2.0 encodes values for the signature with
  Python's `quote(value, safe="*")`, which leaves `~` bare; the management server re-encodes
  with Java's `URLEncoder` (`~` -> `%7E`) and refuses the request (401) whenever a value holds a
  `~`. The client here signs with the server's encoding (see `server_encode`). The parameters
  themselves are sent exactly as `cs` sends them (the server decodes them first and encodes
  only for the signature), for GET and POST alike.
- **Errors** become project exceptions (subclasses of `errors.CloudStackError`) that keep
  CloudStack's `errortext`, `errorcode` and `cserrorcode`; a failed async job raises
  `CloudStackJobError` with the job's own error text. Nothing raised or logged contains the
  secret key (nor the signed URL).
- **"Does it exist?"** `vm(id)`, `template(id)`, ... answer None for an id CloudStack does not
  know. The real server answers such a lookup with error 431 ("entity does not exist"), not
  with an empty list; the facade turns exactly that into None.

Host identity: a KVM host's StorPool client id (`SP_OURID`) is where the Java plugin's host
listener stores it, the host's `parent` (from the ModifyStoragePool answer's `clientNodeId`),
else in the host's details (`listHosts` item `details`, key `SP_OURID`); a detail `agent.port`
overrides the agent port for that host.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote

import cs
import requests

from cloudstack_storpool.errors import CloudStackError

log = logging.getLogger(__name__)

T = TypeVar("T")

PAGE_SIZE = 500
"""What `cs` asks per page with fetch_list; the server's default.page.size maximum."""

STORPOOL_ALERT_TYPE = 2501
"""Alert type of the alerts this project raises (generateAlert needs a type outside the built-in ones)."""

_NOT_FOUND_MARK = "entity does not exist"


# ---------------------------------------------------------------------------- errors


class CloudStackApiError(CloudStackError):
    """CloudStack answered with an error. `errortext` is CloudStack's message, verbatim."""

    def __init__(
        self,
        command: str,
        errortext: str,
        *,
        errorcode: int | None = None,
        cserrorcode: int | None = None,
    ) -> None:
        super().__init__(command, errortext, errorcode=errorcode)
        self.cserrorcode = cserrorcode


class CloudStackAuthError(CloudStackApiError):
    """401: wrong key or secret, a clock too far off (expired signature), or a bad signature."""

    code = "unauthorized"


class CloudStackParamError(CloudStackApiError):
    """431: CloudStack refused a parameter (unknown id, bad value, unknown setting name)."""

    code = "invalid"


class _AboutJob(CloudStackApiError):
    """An error about one async job: `jobid` lets an operator look the job up in CloudStack."""

    def __init__(self, command: str, errortext: str, *, jobid: str | None = None, **kw: Any) -> None:
        super().__init__(command, errortext, **kw)
        self.jobid = jobid


class CloudStackJobError(_AboutJob):
    """An async job ended in failure; `errortext` is the job's own."""


class CloudStackTimeout(_AboutJob):
    """An async job did not finish in time. It may still finish later: not a failure."""

    code = "timeout"


class CloudStackUnreachable(CloudStackApiError):
    """No HTTP answer at all (refused, reset, timed out). Never read as "object absent"."""

    code = "unreachable"


class CloudStackConfigError(CloudStackError):
    """No usable CloudStack endpoint/credentials in the environment or cloudstack.ini."""

    code = "config"


# ---------------------------------------------------------------------------- signing


def server_encode(value: str) -> str:
    """Encode one value the way the management server does before checking a signature.

    The server uses `java.net.URLEncoder.encode(value, "UTF-8")` then turns `+` into `%20`:
    letters, digits and `.-*_` stay, everything else is `%XX` of the UTF-8 bytes. Python's
    `quote(value, safe="*")` agrees on every character except `~`, which `quote` leaves alone.
    """
    return quote(value, safe="*").replace("~", "%7E")


def sign(params: Mapping[str, str], secret: str) -> str:
    """Signature (version 3 rules) over `params`, excluding any `signature` already present."""
    canonical = "&".join(
        f"{name}={server_encode(value)}" for name, value in sorted(params.items()) if name != "signature"
    ).lower()
    digest = hmac.new(secret.encode("utf-8"), canonical.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


class _CsClient(cs.CloudStack):
    """`cs.CloudStack` with the server's encoding for the signature (see module docstring)."""

    def _sign(self, data: dict[str, str]) -> None:
        if self.secret:
            data["signature"] = sign(data, self.secret)

    def __repr__(self) -> str:
        return f"<CloudStack {self.endpoint}>"


# ---------------------------------------------------------------------------- typed results


def _str(item: Mapping[str, Any], key: str) -> str | None:
    value = item.get(key)
    return None if value is None or value == "" else str(value)


def _int(item: Mapping[str, Any], key: str) -> int | None:
    value = item.get(key)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _bool(item: Mapping[str, Any], key: str) -> bool:
    value = item.get(key)
    if isinstance(value, str):
        return value.lower() == "true"
    return bool(value)


def _time(item: Mapping[str, Any], key: str) -> datetime | None:
    value = item.get(key)
    if not value:
        return None
    try:
        return datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        return None


def _details(item: Mapping[str, Any], key: str) -> dict[str, str]:
    value = item.get(key)
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    return {}


def _tag_map(items: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """CloudStack's resource tags (`[{"key": k, "value": v, ...}]`, in listTags and inside
    listVirtualMachines items alike) as {k: v}."""
    return {str(t["key"]): str(t.get("value", "")) for t in items if "key" in t}


@dataclass(frozen=True)
class Zone:
    id: str
    name: str

    @classmethod
    def from_api(cls, item: Mapping[str, Any]) -> Zone:
        return cls(str(item["id"]), str(item.get("name", "")))


@dataclass(frozen=True)
class Cluster:
    id: str
    name: str
    zone_id: str | None
    hypervisor: str | None

    @classmethod
    def from_api(cls, item: Mapping[str, Any]) -> Cluster:
        return cls(str(item["id"]), str(item.get("name", "")), _str(item, "zoneid"), _str(item, "hypervisortype"))


def _client_id(raw: Any) -> int | None:
    """A StorPool client id (1..4095), or None for anything else (a `parent` that is a host id)."""
    text = str(raw).strip() if raw is not None else ""
    return int(text) if text.isdigit() and 1 <= int(text) <= 4095 else None


@dataclass(frozen=True)
class Host:
    id: str
    name: str
    ip_address: str
    cluster_id: str | None
    zone_id: str | None
    state: str
    sp_client_id: int | None
    """StorPool client id: the host's `parent` (the Java plugin's place), else its `SP_OURID` detail."""
    details: dict[str, str] = field(default_factory=dict)
    resource_state: str | None = None
    ha_state: str | None = None

    @property
    def agent_port(self) -> int | None:
        """Per-host agent port override (detail `agent.port`); None: use storpool.agent.port."""
        raw = self.details.get("agent.port")
        return int(raw) if raw and raw.isdigit() else None

    @classmethod
    def from_api(cls, item: Mapping[str, Any]) -> Host:
        details = _details(item, "details")
        hostha = item.get("hostha") if isinstance(item.get("hostha"), Mapping) else {}
        assert isinstance(hostha, Mapping)
        return cls(
            id=str(item["id"]), name=str(item.get("name", "")), ip_address=str(item.get("ipaddress", "")),
            cluster_id=_str(item, "clusterid"), zone_id=_str(item, "zoneid"), state=str(item.get("state", "")),
            sp_client_id=_client_id(item.get("parent")) or _client_id(details.get("SP_OURID")), details=details,
            resource_state=_str(item, "resourcestate"), ha_state=_str(hostha, "hastate"),
        )


@dataclass(frozen=True)
class VirtualMachine:
    id: str
    name: str
    instance_name: str
    state: str
    host_id: str | None
    last_host_id: str | None
    zone_id: str | None
    tags: dict[str, str] = field(default_factory=dict)
    template_id: str | None = None
    service_offering_id: str | None = None
    account: str | None = None

    @property
    def placement_host_id(self) -> str | None:
        """Where commands for this VM go: the host it runs on, else the one it last ran on."""
        return self.host_id or self.last_host_id

    @classmethod
    def from_api(cls, item: Mapping[str, Any]) -> VirtualMachine:
        tags = _tag_map(item.get("tags") or [])
        return cls(
            id=str(item["id"]), name=str(item.get("name", "")), instance_name=str(item.get("instancename", "")),
            state=str(item.get("state", "")), host_id=_str(item, "hostid"), last_host_id=_str(item, "lasthostid"),
            zone_id=_str(item, "zoneid"), tags=tags, template_id=_str(item, "templateid"),
            service_offering_id=_str(item, "serviceofferingid"), account=_str(item, "account"),
        )


@dataclass(frozen=True)
class Volume:
    id: str
    name: str
    path: str | None
    size: int
    min_iops: int | None
    max_iops: int | None
    storage_id: str | None
    vm_id: str | None
    device_id: int | None
    disk_offering_id: str | None
    type: str
    """ROOT or DATADISK."""
    state: str | None = None
    zone_id: str | None = None

    @classmethod
    def from_api(cls, item: Mapping[str, Any]) -> Volume:
        return cls(
            id=str(item["id"]), name=str(item.get("name", "")), path=_str(item, "path"),
            size=_int(item, "size") or 0, min_iops=_int(item, "miniops"), max_iops=_int(item, "maxiops"),
            storage_id=_str(item, "storageid"), vm_id=_str(item, "virtualmachineid"),
            device_id=_int(item, "deviceid"), disk_offering_id=_str(item, "diskofferingid"),
            type=str(item.get("type", "")), state=_str(item, "state"), zone_id=_str(item, "zoneid"),
        )


@dataclass(frozen=True)
class Template:
    """A template CloudStack still lists. Removed templates are not listed at all."""

    id: str
    name: str
    size: int | None
    format: str | None
    ready: bool
    zone_id: str | None = None
    status: str | None = None

    @classmethod
    def from_api(cls, item: Mapping[str, Any]) -> Template:
        return cls(
            id=str(item["id"]), name=str(item.get("name", "")), size=_int(item, "size"),
            format=_str(item, "format"), ready=_bool(item, "isready"), zone_id=_str(item, "zoneid"),
            status=_str(item, "status"),
        )


@dataclass(frozen=True)
class Snapshot:
    id: str
    name: str
    volume_id: str | None
    state: str | None
    zone_id: str | None
    snapshot_type: str | None
    created: datetime | None

    @classmethod
    def from_api(cls, item: Mapping[str, Any]) -> Snapshot:
        return cls(
            id=str(item["id"]), name=str(item.get("name", "")), volume_id=_str(item, "volumeid"),
            state=_str(item, "state"), zone_id=_str(item, "zoneid"), snapshot_type=_str(item, "snapshottype"),
            created=_time(item, "created"),
        )


@dataclass(frozen=True)
class VMSnapshot:
    id: str
    name: str
    vm_id: str | None
    state: str | None
    type: str | None
    """Disk or DiskAndMemory."""
    current: bool
    parent_id: str | None
    created: datetime | None

    @classmethod
    def from_api(cls, item: Mapping[str, Any]) -> VMSnapshot:
        return cls(
            id=str(item["id"]), name=str(item.get("name", "")), vm_id=_str(item, "virtualmachineid"),
            state=_str(item, "state"), type=_str(item, "type"), current=_bool(item, "current"),
            parent_id=_str(item, "parent"), created=_time(item, "created"),
        )


@dataclass(frozen=True)
class Offering:
    """What disk and service offerings share: the IOPS range and the StorPool details
    (`SP_TEMPLATE`, `SP_QOSCLASS`) that choose a volume's template and QoS class."""

    id: str
    name: str
    min_iops: int | None
    max_iops: int | None
    customized_iops: bool
    details: dict[str, str] = field(default_factory=dict)

    @property
    def sp_template(self) -> str | None:
        return self.details.get("SP_TEMPLATE") or None

    @property
    def sp_qos_class(self) -> str | None:
        return self.details.get("SP_QOSCLASS") or None

    @staticmethod
    def _common(item: Mapping[str, Any], details_key: str) -> dict[str, Any]:
        return {
            "id": str(item["id"]), "name": str(item.get("name", "")), "min_iops": _int(item, "miniops"),
            "max_iops": _int(item, "maxiops"), "customized_iops": _bool(item, "iscustomizediops"),
            "details": _details(item, details_key),
        }


@dataclass(frozen=True)
class DiskOffering(Offering):
    disk_size_gb: int | None = None

    @classmethod
    def from_api(cls, item: Mapping[str, Any]) -> DiskOffering:
        return cls(**cls._common(item, "details"), disk_size_gb=_int(item, "disksize"))


@dataclass(frozen=True)
class ServiceOffering(Offering):
    cpu_number: int | None = None
    memory: int | None = None

    @classmethod
    def from_api(cls, item: Mapping[str, Any]) -> ServiceOffering:
        return cls(**cls._common(item, "serviceofferingdetails"), cpu_number=_int(item, "cpunumber"),
                   memory=_int(item, "memory"))


@dataclass(frozen=True)
class StoragePool:
    id: str
    name: str
    zone_id: str | None
    cluster_id: str | None
    provider: str | None
    scope: str | None
    type: str | None
    state: str | None
    capacity: int | None
    used: int | None

    @classmethod
    def from_api(cls, item: Mapping[str, Any]) -> StoragePool:
        return cls(
            id=str(item["id"]), name=str(item.get("name", "")), zone_id=_str(item, "zoneid"),
            cluster_id=_str(item, "clusterid"), provider=_str(item, "provider"), scope=_str(item, "scope"),
            type=_str(item, "type"), state=_str(item, "state"), capacity=_int(item, "disksizetotal"),
            used=_int(item, "disksizeused"),
        )


@dataclass(frozen=True)
class Configuration:
    name: str
    value: str | None
    default: str | None
    category: str | None
    description: str | None
    is_dynamic: bool
    scope: str | None
    """Set only when the listing named a scope object (zoneid, clusterid, ...)."""

    @classmethod
    def from_api(cls, item: Mapping[str, Any]) -> Configuration:
        value = item.get("value")
        return cls(
            name=str(item["name"]), value=None if value is None else str(value),
            default=None if item.get("defaultvalue") is None else str(item["defaultvalue"]),
            category=_str(item, "category"), description=_str(item, "description"),
            is_dynamic=_bool(item, "isdynamic"), scope=_str(item, "scope"),
        )


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    level: str | None
    description: str
    created: datetime | None
    resource_id: str | None
    resource_type: str | None
    state: str | None

    @classmethod
    def from_api(cls, item: Mapping[str, Any]) -> Event:
        return cls(
            id=str(item["id"]), type=str(item.get("type", "")), level=_str(item, "level"),
            description=str(item.get("description", "")), created=_time(item, "created"),
            resource_id=_str(item, "resourceid"), resource_type=_str(item, "resourcetype"),
            state=_str(item, "state"),
        )


# ---------------------------------------------------------------------------- the client


def _scope_params(
    zone_id: str | None, cluster_id: str | None, storage_id: str | None, account_id: str | None,
    domain_id: str | None,
) -> dict[str, str]:
    given = {"zoneid": zone_id, "clusterid": cluster_id, "storageid": storage_id, "accountid": account_id,
             "domainid": domain_id}
    return {k: v for k, v in given.items() if v}


class CloudStackClient:
    """Typed access to the CloudStack API (admin credentials)."""

    def __init__(
        self,
        endpoint: str,
        key: str | None,
        secret: str | None,
        *,
        timeout: float = 10.0,
        verify: bool | str = True,
        method: str = "get",
        job_timeout: float = 600.0,
        poll_interval: float = 2.0,
    ) -> None:
        if method.lower() not in ("get", "post"):
            raise ValueError(f"method must be get or post, not {method!r}")
        self.endpoint = endpoint
        self.key = key
        self.method = method.lower()
        self.job_timeout = job_timeout
        self._cs = _CsClient(
            endpoint, key, secret, timeout=max(1, math.ceil(timeout)), method=self.method, verify=verify,
            job_timeout=max(1, math.ceil(job_timeout)), poll_interval=poll_interval,
        )

    @classmethod
    def from_config(cls, region: str | None = None) -> CloudStackClient:
        """From `CLOUDSTACK_ENDPOINT/KEY/SECRET/...` or `cloudstack.ini`, as the `cs` tool reads them."""
        try:
            conf = cs.read_config(region)
        except (SystemExit, ValueError) as exc:
            raise CloudStackConfigError(
                "config",
                "no CloudStack endpoint configured: set CLOUDSTACK_ENDPOINT, CLOUDSTACK_KEY and "
                f"CLOUDSTACK_SECRET, or write a cloudstack.ini ({exc})",
            ) from None
        if not conf.get("endpoint"):
            raise CloudStackConfigError("config", "CloudStack configuration has no endpoint")
        verify: bool | str = True
        if conf.get("dangerous_no_tls_verify"):
            verify = False
        elif conf.get("verify"):
            verify = conf["verify"]
        return cls(
            conf["endpoint"], conf.get("key"), conf.get("secret"), timeout=float(conf.get("timeout") or 10),
            verify=verify, method=str(conf.get("method") or "get"),
            job_timeout=float(conf.get("job_timeout") or 600),
            poll_interval=float(conf.get("poll_interval") or 2.0),
        )

    def __repr__(self) -> str:
        return f"CloudStackClient({self.endpoint!r}, key={self.key!r}, method={self.method!r})"

    # ------------------------------------------------------------------ plumbing

    def _call(self, command: str, **params: Any) -> Any:
        """Run one command; every failure leaves as a project exception."""
        params = {k: v for k, v in params.items() if v is not None}
        try:
            return getattr(self._cs, command)(**params)
        except cs.CloudStackApiException as exc:
            raise _api_error(command, exc) from None
        except cs.CloudStackException as exc:
            raise _client_error(command, exc) from None
        except requests.RequestException as exc:
            # str(exc) carries the request URL (key and signature): name the endpoint only.
            raise CloudStackUnreachable(
                command, f"cannot reach {self.endpoint}: {type(exc).__name__}"
            ) from None

    def _list(self, command: str, **params: Any) -> list[dict[str, Any]]:
        result = self._call(command, fetch_list=True, **params)
        return list(result) if isinstance(result, list) else []

    def _one(self, parse: Callable[[Mapping[str, Any]], T], command: str, id_param: str, ident: str,
             **params: Any) -> T | None:
        """Look one object up by id and parse it; an id the server cannot resolve is None."""
        try:
            items = self._list(command, **{id_param: ident}, **params)
        except CloudStackParamError as exc:
            if _NOT_FOUND_MARK in exc.errortext and f"parameter {id_param} " in exc.errortext:
                return None
            raise
        return parse(items[0]) if items else None

    def _job(self, command: str, **params: Any) -> dict[str, Any]:
        result = self._call(command, fetch_result=True, **params)
        return result if isinstance(result, dict) else {}

    # ------------------------------------------------------------------ topology

    def zones(self) -> list[Zone]:
        return [Zone.from_api(i) for i in self._list("listZones")]

    def zone(self, zone_id: str) -> Zone | None:
        return self._one(Zone.from_api, "listZones", "id", zone_id)

    def clusters(self, zone_id: str | None = None) -> list[Cluster]:
        return [Cluster.from_api(i) for i in self._list("listClusters", zoneid=zone_id)]

    def cluster(self, cluster_id: str) -> Cluster | None:
        return self._one(Cluster.from_api, "listClusters", "id", cluster_id)

    def hosts(self, zone_id: str | None = None, cluster_id: str | None = None) -> list[Host]:
        """Hypervisor hosts only (type Routing): system VMs' and storage hosts are left out."""
        items = self._list("listHosts", type="Routing", zoneid=zone_id, clusterid=cluster_id)
        return [Host.from_api(i) for i in items]

    def host(self, host_id: str) -> Host | None:
        return self._one(Host.from_api, "listHosts", "id", host_id)

    def storage_pools(self, zone_id: str | None = None) -> list[StoragePool]:
        return [StoragePool.from_api(i) for i in self._list("listStoragePools", zoneid=zone_id)]

    def storage_pool(self, pool_id: str) -> StoragePool | None:
        return self._one(StoragePool.from_api, "listStoragePools", "id", pool_id)

    # ------------------------------------------------------------------ VMs, volumes, snapshots

    def vms(
        self,
        *,
        host_id: str | None = None,
        zone_id: str | None = None,
        state: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> list[VirtualMachine]:
        """VMs of every account (listall); `tags` keeps VMs carrying all of those resource tags."""
        tag_filter = [{"key": k, "value": v} for k, v in (tags or {}).items()]
        items = self._list("listVirtualMachines", listall=True, hostid=host_id, zoneid=zone_id, state=state,
                           tags=tag_filter or None)
        return [VirtualMachine.from_api(i) for i in items]

    def vm(self, vm_id: str) -> VirtualMachine | None:
        return self._one(VirtualMachine.from_api, "listVirtualMachines", "id", vm_id, listall=True)

    def volumes(self, vm_id: str | None = None, storage_id: str | None = None) -> list[Volume]:
        items = self._list("listVolumes", listall=True, virtualmachineid=vm_id, storageid=storage_id)
        return [Volume.from_api(i) for i in items]

    def volume(self, volume_id: str) -> Volume | None:
        return self._one(Volume.from_api, "listVolumes", "id", volume_id, listall=True)

    def snapshots(self, volume_id: str | None = None) -> list[Snapshot]:
        return [Snapshot.from_api(i) for i in self._list("listSnapshots", listall=True, volumeid=volume_id)]

    def snapshot(self, snapshot_id: str) -> Snapshot | None:
        return self._one(Snapshot.from_api, "listSnapshots", "id", snapshot_id, listall=True)

    def vm_snapshots(self, vm_id: str | None = None) -> list[VMSnapshot]:
        items = self._list("listVMSnapshot", listall=True, virtualmachineid=vm_id)
        return [VMSnapshot.from_api(i) for i in items]

    def vm_snapshot(self, vm_snapshot_id: str) -> VMSnapshot | None:
        return self._one(VMSnapshot.from_api, "listVMSnapshot", "vmsnapshotid", vm_snapshot_id, listall=True)

    def tags(self, resource_type: str, resource_id: str) -> dict[str, str]:
        """Resource tags of one object, e.g. `tags("UserVm", vm_id)` -> {"vc-policy": "..."}."""
        return _tag_map(self._list("listTags", listall=True, resourcetype=resource_type, resourceid=resource_id))

    # ------------------------------------------------------------------ templates, offerings

    def templates(self, filter: str = "all", zone_id: str | None = None) -> list[Template]:
        """Templates CloudStack still has. `filter` is listTemplates' required templatefilter."""
        items = self._list("listTemplates", templatefilter=filter, zoneid=zone_id)
        return [Template.from_api(i) for i in items]

    def template(self, template_id: str) -> Template | None:
        """None once the template is deleted (what template-cache GC asks)."""
        return self._one(Template.from_api, "listTemplates", "id", template_id, templatefilter="all")

    def disk_offerings(self) -> list[DiskOffering]:
        return [DiskOffering.from_api(i) for i in self._list("listDiskOfferings")]

    def disk_offering(self, offering_id: str) -> DiskOffering | None:
        return self._one(DiskOffering.from_api, "listDiskOfferings", "id", offering_id)

    def service_offerings(self) -> list[ServiceOffering]:
        return [ServiceOffering.from_api(i) for i in self._list("listServiceOfferings")]

    def service_offering(self, offering_id: str) -> ServiceOffering | None:
        return self._one(ServiceOffering.from_api, "listServiceOfferings", "id", offering_id)

    # ------------------------------------------------------------------ configuration

    def configurations(
        self,
        name: str | None = None,
        *,
        category: str | None = None,
        zone_id: str | None = None,
        cluster_id: str | None = None,
        storage_id: str | None = None,
        account_id: str | None = None,
        domain_id: str | None = None,
    ) -> list[Configuration]:
        """listConfigurations. `name` is CloudStack's substring match: use `configuration()` for one.

        With a scope id, only settings of that scope are listed, each with its value in that
        scope (the global value when the scope object has none of its own).
        """
        scope = _scope_params(zone_id, cluster_id, storage_id, account_id, domain_id)
        items = self._list("listConfigurations", name=name, category=category, **scope)
        return [Configuration.from_api(i) for i in items]

    def configuration(
        self,
        name: str,
        *,
        zone_id: str | None = None,
        cluster_id: str | None = None,
        storage_id: str | None = None,
        account_id: str | None = None,
        domain_id: str | None = None,
    ) -> Configuration | None:
        """The setting called exactly `name` (None when CloudStack does not know it)."""
        found = self.configurations(name, zone_id=zone_id, cluster_id=cluster_id, storage_id=storage_id,
                                    account_id=account_id, domain_id=domain_id)
        return next((c for c in found if c.name == name), None)

    def update_configuration(
        self,
        name: str,
        value: str,
        *,
        zone_id: str | None = None,
        cluster_id: str | None = None,
        storage_id: str | None = None,
        account_id: str | None = None,
        domain_id: str | None = None,
    ) -> Configuration:
        scope = _scope_params(zone_id, cluster_id, storage_id, account_id, domain_id)
        result = self._call("updateConfiguration", name=name, value=value, **scope)
        item = result.get("configuration", result) if isinstance(result, Mapping) else {}
        return Configuration.from_api(item)

    # ------------------------------------------------------------------ events, alerts, jobs

    def events(
        self,
        type: str | None = None,
        *,
        start_date: datetime | None = None,
        keyword: str | None = None,
    ) -> list[Event]:
        """Events, newest first. `type` e.g. `TEMPLATE.DELETE`."""
        start = start_date.strftime("%Y-%m-%d %H:%M:%S") if start_date else None
        items = self._list("listEvents", listall=True, type=type, startdate=start, keyword=keyword)
        return [Event.from_api(i) for i in items]

    def generate_alert(
        self, name: str, description: str, *, zone_id: str | None = None, alert_type: int = STORPOOL_ALERT_TYPE
    ) -> None:
        """Raise a CloudStack alert (admin API `generateAlert`, async); waits for the job."""
        self._job("generateAlert", type=alert_type, name=name, description=description, zoneid=zone_id)

    def delete_template(self, template_id: str, *, zone_id: str | None = None, forced: bool = False) -> None:
        """deleteTemplate (async). Without `forced`, CloudStack refuses while VMs use the template."""
        self._job("deleteTemplate", id=template_id, zoneid=zone_id, forced=forced or None)


# ---------------------------------------------------------------------------- error mapping


def _api_error(command: str, exc: cs.CloudStackApiException) -> CloudStackApiError:
    error = exc.error if isinstance(exc.error, Mapping) else {}
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    errorcode = _int(error, "errorcode") or status
    cserrorcode = _int(error, "cserrorcode")
    errortext = str(error.get("errortext") or (exc.args[0] if exc.args else "CloudStack error"))
    if exc.args and exc.args[0] == "Job failure":
        jobid = None
        try:
            jobid = response.json().get("queryasyncjobresultresponse", {}).get("jobid") if response else None
        except ValueError:
            jobid = None
        return CloudStackJobError(command, errortext, jobid=jobid, errorcode=errorcode, cserrorcode=cserrorcode)
    kind: type[CloudStackApiError] = CloudStackApiError
    if errorcode == 401:
        kind = CloudStackAuthError
    elif errorcode == 431:
        kind = CloudStackParamError
    return kind(command, errortext, errorcode=errorcode, cserrorcode=cserrorcode)


def _client_error(command: str, exc: cs.CloudStackException) -> CloudStackApiError:
    args = [str(a) for a in exc.args]
    if args and args[0].startswith("Timeout waiting for async job result"):
        jobid = args[1] if len(args) > 1 else None
        return CloudStackTimeout(command, f"async job {jobid} did not finish in time", jobid=jobid, errorcode=408)
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return CloudStackApiError(command, "; ".join(args) or "unexpected answer", errorcode=status)
