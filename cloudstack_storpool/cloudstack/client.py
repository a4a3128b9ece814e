"""`CloudStackClient`: everything the driver, the heartbeat and the settings ask CloudStack.

It answers typed, frozen records (records.py) instead of raw response dicts, and wraps the `cs`
client (paging with `fetch_list`, async jobs with `fetch_result`) with the server's signing
(signing.py) and the project's errors (failures.py). "Does it exist?" lookups (`vm(id)`,
`template(id)`, ...) answer None for an id CloudStack does not know: the real server answers
such a lookup with error 431 ("entity does not exist"), not with an empty list, and exactly
that becomes None.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypedDict, TypeVar, Unpack

import cs

from cloudstack_storpool import logs, metrics
from cloudstack_storpool.cloudstack import failures
from cloudstack_storpool.cloudstack.fields import Record, tag_map
from cloudstack_storpool.cloudstack.records import (
    Cluster,
    Configuration,
    DiskOffering,
    Event,
    Host,
    ServiceOffering,
    Snapshot,
    StoragePool,
    Template,
    VirtualMachine,
    VMSnapshot,
    Volume,
    Zone,
)
from cloudstack_storpool.cloudstack.signing import SigningClient
from cloudstack_storpool.errors import CloudStackConfigError, CloudStackParamError

R = TypeVar("R", bound=Record)

STORPOOL_ALERT_TYPE = 2501
"""Alert type of the alerts this project raises (generateAlert needs a type outside the built-in ones)."""


class ScopeIds(TypedDict, total=False):
    """The scope object a setting is read or written for (none: the global value)."""

    zone_id: str | None
    cluster_id: str | None
    storage_id: str | None
    account_id: str | None
    domain_id: str | None


def _scope_params(scope: ScopeIds) -> dict[str, str]:
    """`zone_id=...` -> the API's `zoneid=...`; ids that are None or "" are left out."""
    return {key.replace("_", ""): value for key, value in scope.items() if isinstance(value, str) and value}


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
        logs.register_secret(secret)
        self._cs = SigningClient(
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
                "no CloudStack endpoint configured: set CLOUDSTACK_ENDPOINT, CLOUDSTACK_KEY and "
                f"CLOUDSTACK_SECRET, or write a cloudstack.ini ({exc})"
            ) from None
        if not conf.get("endpoint"):
            raise CloudStackConfigError("CloudStack configuration has no endpoint")
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
        start, err = time.monotonic(), None
        try:
            return getattr(self._cs, command)(**params)
        except failures.TRANSLATED as exc:
            err = failures.translate(command, exc, self.endpoint)
            raise err from None
        finally:
            metrics.cloudstack_call(command, time.monotonic() - start, err)

    def _list(self, record: type[R], command: str, **params: Any) -> list[R]:
        result = self._call(command, fetch_list=True, **params)
        return [record.from_api(item) for item in result] if isinstance(result, list) else []

    def _one(self, record: type[R], command: str, id_param: str, ident: str, **params: Any) -> R | None:
        """Look one object up by id; an id the server cannot resolve is None."""
        try:
            items = self._list(record, command, **{id_param: ident}, **params)
        except CloudStackParamError as exc:
            if failures.is_unknown_id(exc, id_param):
                return None
            raise
        return items[0] if items else None

    def _job(self, command: str, **params: Any) -> None:
        self._call(command, fetch_result=True, **params)

    # ------------------------------------------------------------------ topology

    def zones(self) -> list[Zone]:
        return self._list(Zone, "listZones")

    def zone(self, zone_id: str) -> Zone | None:
        return self._one(Zone, "listZones", "id", zone_id)

    def clusters(self, zone_id: str | None = None) -> list[Cluster]:
        return self._list(Cluster, "listClusters", zoneid=zone_id)

    def cluster(self, cluster_id: str) -> Cluster | None:
        return self._one(Cluster, "listClusters", "id", cluster_id)

    def hosts(self, zone_id: str | None = None, cluster_id: str | None = None) -> list[Host]:
        """Hypervisor hosts only (type Routing): system VMs' and storage hosts are left out."""
        return self._list(Host, "listHosts", type="Routing", zoneid=zone_id, clusterid=cluster_id)

    def host(self, host_id: str) -> Host | None:
        return self._one(Host, "listHosts", "id", host_id)

    def storage_pools(self, zone_id: str | None = None) -> list[StoragePool]:
        return self._list(StoragePool, "listStoragePools", zoneid=zone_id)

    def storage_pool(self, pool_id: str) -> StoragePool | None:
        return self._one(StoragePool, "listStoragePools", "id", pool_id)

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
        return self._list(VirtualMachine, "listVirtualMachines", listall=True, hostid=host_id, zoneid=zone_id,
                          state=state, tags=tag_filter or None)

    def vm(self, vm_id: str) -> VirtualMachine | None:
        return self._one(VirtualMachine, "listVirtualMachines", "id", vm_id, listall=True)

    def volumes(self, vm_id: str | None = None, storage_id: str | None = None) -> list[Volume]:
        return self._list(Volume, "listVolumes", listall=True, virtualmachineid=vm_id, storageid=storage_id)

    def volume(self, volume_id: str) -> Volume | None:
        return self._one(Volume, "listVolumes", "id", volume_id, listall=True)

    def snapshots(self, volume_id: str | None = None) -> list[Snapshot]:
        return self._list(Snapshot, "listSnapshots", listall=True, volumeid=volume_id)

    def snapshot(self, snapshot_id: str) -> Snapshot | None:
        return self._one(Snapshot, "listSnapshots", "id", snapshot_id, listall=True)

    def vm_snapshots(self, vm_id: str | None = None) -> list[VMSnapshot]:
        return self._list(VMSnapshot, "listVMSnapshot", listall=True, virtualmachineid=vm_id)

    def vm_snapshot(self, vm_snapshot_id: str) -> VMSnapshot | None:
        return self._one(VMSnapshot, "listVMSnapshot", "vmsnapshotid", vm_snapshot_id, listall=True)

    def tags(self, resource_type: str, resource_id: str) -> dict[str, str]:
        """Resource tags of one object, e.g. `tags("UserVm", vm_id)` -> {"vc-policy": "..."}."""
        result = self._call("listTags", fetch_list=True, listall=True, resourcetype=resource_type,
                            resourceid=resource_id)
        return tag_map(result)

    # ------------------------------------------------------------------ templates, offerings

    def templates(self, filter: str = "all", zone_id: str | None = None) -> list[Template]:
        """Templates CloudStack still has. `filter` is listTemplates' required templatefilter."""
        return self._list(Template, "listTemplates", templatefilter=filter, zoneid=zone_id)

    def template(self, template_id: str) -> Template | None:
        """None once the template is deleted (what template-cache GC asks)."""
        return self._one(Template, "listTemplates", "id", template_id, templatefilter="all")

    def disk_offerings(self) -> list[DiskOffering]:
        return self._list(DiskOffering, "listDiskOfferings")

    def disk_offering(self, offering_id: str) -> DiskOffering | None:
        return self._one(DiskOffering, "listDiskOfferings", "id", offering_id)

    def service_offerings(self) -> list[ServiceOffering]:
        return self._list(ServiceOffering, "listServiceOfferings")

    def service_offering(self, offering_id: str) -> ServiceOffering | None:
        return self._one(ServiceOffering, "listServiceOfferings", "id", offering_id)

    # ------------------------------------------------------------------ configuration

    def configurations(self, name: str | None = None, *, category: str | None = None,
                       **scope: Unpack[ScopeIds]) -> list[Configuration]:
        """listConfigurations. `name` is CloudStack's substring match: use `configuration()` for one.

        With a scope id, only settings of that scope are listed, each with its value in that
        scope (the global value when the scope object has none of its own).
        """
        return self._list(Configuration, "listConfigurations", name=name, category=category,
                          **_scope_params(scope))

    def configuration(self, name: str, **scope: Unpack[ScopeIds]) -> Configuration | None:
        """The setting called exactly `name` (None when CloudStack does not know it)."""
        return next((c for c in self.configurations(name, **scope) if c.name == name), None)

    def update_configuration(self, name: str, value: str, **scope: Unpack[ScopeIds]) -> Configuration:
        result = self._call("updateConfiguration", name=name, value=value, **_scope_params(scope))
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
        return self._list(Event, "listEvents", listall=True, type=type, startdate=start, keyword=keyword)

    def generate_alert(
        self, name: str, description: str, *, zone_id: str | None = None, alert_type: int = STORPOOL_ALERT_TYPE
    ) -> None:
        """Raise a CloudStack alert (admin API `generateAlert`, async); waits for the job."""
        self._job("generateAlert", type=alert_type, name=name, description=description, zoneid=zone_id)

    def delete_template(self, template_id: str, *, zone_id: str | None = None, forced: bool = False) -> None:
        """deleteTemplate (async). Without `forced`, CloudStack refuses while VMs use the template."""
        self._job("deleteTemplate", id=template_id, zoneid=zone_id, forced=forced or None)
