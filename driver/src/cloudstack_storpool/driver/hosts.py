"""Host-HA questions asked of StorPool on behalf of CloudStack's KVM HA: is this host alive for
storage, and is a VM on it still doing I/O?

The decisions themselves live in `heartbeat/` (policy and the one-ServicesList-per-cluster
check); this module only supplies what the driver knows: the pools, each host's StorPool client
id, and `kvm.ha.fence.on.storage.heartbeat.failure` of the host's zone.

A host's client id comes from the caller when it has one: the Java plugin's host listener keeps
it in `host.parent`, which CloudStack's HA code carries in HostTO (StorPoolStoragePool.
checkingHeartBeat reads `host.getParent()`) but `listHosts` never shows. Otherwise it is the
host's `SP_OURID` detail, which `listHosts` does show.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cloudstack_storpool.cloudstack.records import Host
from cloudstack_storpool.driver.context import DriverContext
from cloudstack_storpool.errors import NotFound, ValidationError
from cloudstack_storpool.heartbeat.check import CheckConfig, HeartbeatChecker, HostTarget
from cloudstack_storpool.names import check_client_id

FENCE_SETTING = "kvm.ha.fence.on.storage.heartbeat.failure"


@dataclass(frozen=True)
class PoolHeartbeat:
    pool: str
    verdict: str
    reason: str


@dataclass(frozen=True)
class HostHeartbeat:
    host_id: str
    host: str
    client_id: int
    verdict: str
    """alive, dead or unknown; "dead" only when StorPool answered and showed no sign of life."""
    fence_on_any: bool
    pools: list[PoolHeartbeat] = field(default_factory=list)


def check_hosts(ctx: DriverContext, *, host_ids: list[str] | None = None, zone_id: str | None = None,
                io_window: float = 2.0, client_ids: dict[str, int] | None = None) -> list[HostHeartbeat]:
    """One heartbeat round for the given hosts (default: every host with a StorPool client id in
    `zone_id`, or everywhere). `client_ids` maps host ids to the client ids the caller knows
    (`host.parent`); they win over `SP_OURID` details. Costs one ServicesList per StorPool
    cluster; when a client looks down, active-request samples for those hosts only and one
    confirming ServicesList."""
    if io_window < 0 or io_window > 60:
        raise ValidationError("io_window", f"must be between 0 and 60 seconds, got {io_window}")
    given = {hid: check_client_id(cid, f"client_ids.{hid}") for hid, cid in (client_ids or {}).items()}
    if host_ids:
        hosts = []
        for hid in host_ids:
            host = ctx.cloudstack.host(hid)
            if host is None:
                raise NotFound(f"host_ids: CloudStack has no host {hid}")
            hosts.append(host)
    else:
        hosts = list(ctx.cloudstack.hosts(zone_id=zone_id))
    targets: list[tuple[Host, HostTarget]] = []
    for h in hosts:
        client_id = given.get(h.id, h.sp_client_id)
        if client_id is None:
            if host_ids:
                raise ValidationError("host_ids", f"host {h.name} has no StorPool client id (none given in "
                                                  "client_ids, no SP_OURID detail)")
            continue
        targets.append((h, HostTarget(h.name, client_id, h.id)))
    out: list[HostHeartbeat] = []
    by_zone: dict[str, list[HostTarget]] = {}
    for h, t in targets:
        by_zone.setdefault(h.zone_id or "", []).append(t)
    for zone, members in by_zone.items():
        fence = bool(ctx.settings.get(FENCE_SETTING, zone=zone or None))
        pools = [p for p in ctx.pools.pools if not p.zone or not zone or p.zone == zone]
        checker = HeartbeatChecker(pools, CheckConfig(fence_on_any=fence, io_window=io_window))
        for verdict in checker.check(members):
            out.append(HostHeartbeat(
                host_id=verdict.host.host_id, host=verdict.host.name, client_id=verdict.host.client_id,
                verdict=verdict.verdict.value, fence_on_any=fence,
                pools=[PoolHeartbeat(p.pool, p.verdict.value, p.reason) for p in verdict.pools],
            ))
    return out
