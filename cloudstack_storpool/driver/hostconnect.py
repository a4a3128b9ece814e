"""A KVM host joins (or its agent restarts): what StorPool client is it, and may it join?

CloudStack's StorPool host listener sends the host a command on connect and keeps the StorPool
client id (`SP_OURID`) from the answer in the host's `parent` field (a database column listHosts
does not show; CloudStack's HA code hands it to the heartbeat in HostTO). Two hosts claiming one
client id would attach each other's disks and fence each other, so a host whose id another
host already has (as its `SP_OURID` detail: the one place the API shows) is refused, with an
error naming `client_id`, before anything is recorded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cloudstack_storpool.agent.hostconfig import check_client_id
from cloudstack_storpool.driver.connect import host_and_agent, on_host
from cloudstack_storpool.errors import ValidationError

if TYPE_CHECKING:
    from cloudstack_storpool.driver.context import DriverContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HostConnected:
    host_id: str
    host: str
    client_id: int
    cluster_id: str | None
    """`SP_CLUSTER_ID` on the host (the listener records it as the cluster's `sp.cluster.id`)."""
    block_service_running: bool
    """Whether `storpool_block` runs on the host: without it nothing can be attached there."""
    client_status: str | None
    """The host's client as StorPool's ServicesList shows it (running / down), None if unknown."""
    parent: str
    """What CloudStack stores in `host.parent`: the client id as a string."""


def host_connected(ctx: DriverContext, *, host_id: str) -> HostConnected:
    """Ask the host's agent who it is to StorPool; refuse a client id another host has."""
    host, agent = host_and_agent(ctx, host_id)
    facts = on_host(f"facts of host {host.name}", "host_id", agent.facts)
    client_id = check_client_id(facts.get("client_id"), "client_id")
    for other in ctx.cloudstack.hosts():
        if other.id != host.id and other.sp_client_id == client_id:
            raise ValidationError("client_id", f"host {host.name} reports StorPool client id {client_id}, which "
                                               f"host {other.name} ({other.id}) already has: each KVM host needs "
                                               "its own SP_OURID")
    if host.sp_client_id is not None and host.sp_client_id != client_id:
        log.warning("host %s changed StorPool client id from %d to %d", host.name, host.sp_client_id, client_id)
    storpool = facts.get("storpool")
    status = storpool.get("client_status") if isinstance(storpool, dict) else None
    cluster = facts.get("cluster_id")
    if not facts.get("block_service_running"):
        log.warning("host %s: the StorPool block service is not running", host.name)
    return HostConnected(host.id, host.name, client_id, str(cluster) if cluster else None,
                         bool(facts.get("block_service_running")), str(status) if status else None, str(client_id))
