"""Hand a VM's disks to the host it is about to run on: VM start and HA restart.

When CloudStack restarts a VM of a fenced (or merely unreachable) host elsewhere, the old host may
still have the disks attached, and its qemu may even still be writing. Before the VM starts on
the new host every one of its volumes is force-detached from every other StorPool client, then
attached read-write to the new host's client: two hosts never write one disk. The agent's
`prepare_start` does both for each volume (and undoes its own attachments on a failure); this
module decides which volumes and which host, so the service publishes it as one operation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cloudstack_storpool.driver.agenttimeouts import command_timeout
from cloudstack_storpool.driver.connect import agent_of, on_host, vm_disks

if TYPE_CHECKING:
    from cloudstack_storpool.driver.context import DriverContext


@dataclass(frozen=True)
class HandedOver:
    vm_id: str
    host_id: str
    volumes: list[str]
    detached_from: dict[str, list[int]] = field(default_factory=dict)
    """Per volume, the StorPool clients it was force-detached from (empty: it was nowhere else)."""


def hand_over(ctx: DriverContext, *, vm_id: str, host_id: str) -> HandedOver:
    """Every disk of the VM: force-detached from every other host, then attached to `host_id`."""
    disks = vm_disks(ctx, vm_id)
    agent = agent_of(ctx, host_id)
    if not disks:
        return HandedOver(vm_id, host_id, [])
    res = on_host(f"hand-over of VM {vm_id}", "vm_id",
                  lambda: agent.prepare_start(volumes=[d.name for d in disks], timeout=command_timeout(ctx)))
    entries = res.get("volumes") or []
    detached = {str(e["volume"]): [int(c) for c in e.get("detached_from") or []] for e in entries}
    return HandedOver(vm_id, host_id, [d.name for d in disks], detached)
