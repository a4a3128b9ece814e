"""The typed objects the CloudStack facade answers, one field table each.

Each row reads `name: type = api("responsekey", converter)`; `fields.py` holds the builder.
Field order is the constructor's, which the tests' in-memory CloudStack relies on.

Host identity convention (this project's): a KVM host's StorPool client id (`SP_OURID`) is
read from the host's CloudStack details (`listHosts` item `details`, key `SP_OURID`); a detail
`agent.port` overrides the agent port for that host. The Java plugin's host listener keeps the
client id in `host.parent`, but `listHosts` does not show that column (HostResponse has no
such field), so it reaches the project only from callers inside CloudStack (HostTO.getParent).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cloudstack_storpool.cloudstack.fields import (
    Record,
    api,
    count,
    flag,
    ident,
    opt_int,
    raw_text,
    str_map,
    tag_map,
    text,
    timestamp,
)
from cloudstack_storpool.names import is_client_id


def _client_id(raw: Any) -> int | None:
    """A StorPool client id (1..4095), or None for anything else."""
    text = str(raw).strip() if raw is not None else ""
    return int(text) if text.isdigit() and is_client_id(int(text)) else None


def _sp_ourid(details: Any) -> int | None:
    return _client_id(str_map(details).get("SP_OURID"))


class Zone(Record):
    id: str = api("id", ident)
    name: str = api("name", text)


class Cluster(Record):
    id: str = api("id", ident)
    name: str = api("name", text)
    zone_id: str | None = api("zoneid")
    hypervisor: str | None = api("hypervisortype")


class Host(Record):
    id: str = api("id", ident)
    name: str = api("name", text)
    ip_address: str = api("ipaddress", text)
    cluster_id: str | None = api("clusterid")
    zone_id: str | None = api("zoneid")
    state: str = api("state", text)
    sp_client_id: int | None = api("details", _sp_ourid)
    """The host's `SP_OURID` detail: the only place `listHosts` can show a StorPool client id."""
    details: dict[str, str] = api("details", str_map, default_factory=dict)
    resource_state: str | None = api("resourcestate", default=None)
    ha_state: str | None = api("hostha.hastate", default=None)

    @property
    def agent_port(self) -> int | None:
        """Per-host agent port override (detail `agent.port`); None: use storpool.agent.port."""
        raw = self.details.get("agent.port")
        return int(raw) if raw and raw.isdigit() else None


class VirtualMachine(Record):
    id: str = api("id", ident)
    name: str = api("name", text)
    instance_name: str = api("instancename", text)
    state: str = api("state", text)
    host_id: str | None = api("hostid")
    zone_id: str | None = api("zoneid")
    tags: dict[str, str] = api("tags", tag_map, default_factory=dict)
    template_id: str | None = api("templateid", default=None)
    service_offering_id: str | None = api("serviceofferingid", default=None)
    account: str | None = api("account", default=None)

    @property
    def placement_host_id(self) -> str | None:
        """Where commands for this VM go: the host it runs on. CloudStack's listVirtualMachines gives
        `hostid` only while the VM is on a host and has no last host, so a stopped VM has none."""
        return self.host_id


class Volume(Record):
    id: str = api("id", ident)
    name: str = api("name", text)
    path: str | None = api("path")
    size: int = api("size", count)
    min_iops: int | None = api("miniops", opt_int)
    max_iops: int | None = api("maxiops", opt_int)
    storage_id: str | None = api("storageid")
    vm_id: str | None = api("virtualmachineid")
    device_id: int | None = api("deviceid", opt_int)
    disk_offering_id: str | None = api("diskofferingid")
    type: str = api("type", text)
    """ROOT or DATADISK."""
    state: str | None = api("state", default=None)
    zone_id: str | None = api("zoneid", default=None)


class Template(Record):
    """A template CloudStack still lists. Removed templates are not listed at all."""

    id: str = api("id", ident)
    name: str = api("name", text)
    size: int | None = api("size", opt_int)
    format: str | None = api("format")
    ready: bool = api("isready", flag)
    zone_id: str | None = api("zoneid", default=None)
    status: str | None = api("status", default=None)


class Snapshot(Record):
    id: str = api("id", ident)
    name: str = api("name", text)
    volume_id: str | None = api("volumeid")
    state: str | None = api("state")
    zone_id: str | None = api("zoneid")
    snapshot_type: str | None = api("snapshottype")
    created: datetime | None = api("created", timestamp)


class VMSnapshot(Record):
    id: str = api("id", ident)
    name: str = api("name", text)
    vm_id: str | None = api("virtualmachineid")
    state: str | None = api("state")
    type: str | None = api("type")
    """Disk or DiskAndMemory."""
    current: bool = api("current", flag)
    parent_id: str | None = api("parent")
    created: datetime | None = api("created", timestamp)


class Offering(Record):
    """What disk and service offerings share: the IOPS range and the StorPool details
    (`SP_TEMPLATE`, `SP_QOSCLASS`) that choose a volume's template and QoS class."""

    id: str = api("id", ident)
    name: str = api("name", text)
    min_iops: int | None = api("miniops", opt_int)
    max_iops: int | None = api("maxiops", opt_int)
    customized_iops: bool = api("iscustomizediops", flag)
    details: dict[str, str] = api("details", str_map, default_factory=dict)

    @property
    def sp_template(self) -> str | None:
        return self.details.get("SP_TEMPLATE") or None

    @property
    def sp_qos_class(self) -> str | None:
        return self.details.get("SP_QOSCLASS") or None


class DiskOffering(Offering):
    disk_size_gb: int | None = api("disksize", opt_int, default=None)


class ServiceOffering(Offering):
    details: dict[str, str] = api("serviceofferingdetails", str_map, default_factory=dict)
    cpu_number: int | None = api("cpunumber", opt_int, default=None)
    memory: int | None = api("memory", opt_int, default=None)


class StoragePool(Record):
    id: str = api("id", ident)
    name: str = api("name", text)
    zone_id: str | None = api("zoneid")
    cluster_id: str | None = api("clusterid")
    provider: str | None = api("provider")
    scope: str | None = api("scope")
    type: str | None = api("type")
    state: str | None = api("state")
    capacity: int | None = api("disksizetotal", opt_int)
    used: int | None = api("disksizeused", opt_int)


class Configuration(Record):
    name: str = api("name", ident)
    value: str | None = api("value", raw_text)
    default: str | None = api("defaultvalue", raw_text)
    category: str | None = api("category")
    description: str | None = api("description")
    is_dynamic: bool = api("isdynamic", flag)
    scope: str | None = api("scope")
    """Set only when the listing named a scope object (zoneid, clusterid, ...)."""


class Event(Record):
    id: str = api("id", ident)
    type: str = api("type", text)
    level: str | None = api("level")
    description: str = api("description", text)
    created: datetime | None = api("created", timestamp)
    resource_id: str | None = api("resourceid")
    resource_type: str | None = api("resourcetype")
    state: str | None = api("state")
