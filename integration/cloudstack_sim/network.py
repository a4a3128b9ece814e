"""Guest networking of the simulator's zones, and what a public IP request meets there.

Every zone is an advanced zone with security groups (ZoneResponse `networktype` Advanced,
`securitygroupsenabled`): its VMs join one shared guest network, with security groups and
without source NAT, static NAT, port forwarding, firewall or load balancing. Such a zone has no
public IP addresses to hand out: `associateIpAddress` is refused as CloudStack refuses it there
(AssociateIPAddrCmd.getNetworkId, NetworkServiceImpl.allocateIP), in the command's create step,
before a job exists. A client that wants to reach a VM uses its NIC's address.
"""

from __future__ import annotations

from typing import Any

from integration.cloudstack_sim import callers
from integration.cloudstack_sim import model as m
from integration.cloudstack_sim.params import Params, need, owner_of

Item = dict[str, Any]

GUEST_NETWORK_NAME = "defaultGuestNetwork"
"""The zone's shared guest network, with security groups."""


def guest_network_id(zone_id: str) -> str:
    return m.seeded_id("network", f"guest:{zone_id}")


def _network_zone(model: m.CloudStackModel, network_id: str) -> m.Zone:
    zone = next((z for z in model.zones.values() if guest_network_id(z.id) == network_id), None)
    if zone is None:
        raise m.no_entity("networkid", network_id)
    return zone


def associate_ip_address(model: m.CloudStackModel, p: Params) -> Item:
    """AssociateIPAddrCmd.create: the zone from `zoneid`, else from `networkid` (a VPC: the
    simulator has none); the owner from `account` + `domainid`, else the caller. In an advanced
    zone the IP goes to the owner's one isolated network, which an account of a zone with
    security groups never has; naming the zone's shared network is refused by allocateIP, as
    that network has none of the services a public IP serves."""
    if p.get("vpcid"):
        raise m.no_entity("vpcid", p["vpcid"])
    network = _network_zone(model, p["networkid"]) if p.get("networkid") else None
    if p.get("zoneid"):
        zone = need(model.zones, p, "zoneid")
    elif network is not None:
        zone = network
    else:
        raise m.ParamError("Unable to figure out zone to assign IP to. Please specify either zoneId, or networkId, "
                           "or vpcId in the call")
    owner = owner_of(model, p) if p.get("account") and p.get("domainid") else callers.current().account
    callers.check_access(owner, owner)
    if network is not None:
        raise m.ParamError("Associate IP address can only be called on the shared networks in the advanced zone "
                           "with Firewall/Source Nat/Static Nat/Port Forwarding/Load balancing services enabled")
    domain_id = p.get("domainid") or callers.current().domain_id
    raise m.ParamError(f"Account name={p.get('account') or callers.current().account} "
                       f"domain={model.domains.get(domain_id, 'ROOT')} doesn't have virtual networks in zone={zone.name}")


COMMANDS = {"associateIpAddress": associate_ip_address}
