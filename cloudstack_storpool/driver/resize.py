"""Resize a volume: StorPool first, then the host where its VM runs, rolled back on failure.

StorPool changes the size of the volume on every host at once, but a running qemu caches its
disk's size: the host running the VM must call libvirt's block resize so the guest sees the new
size now rather than after a restart. Where the VM runs is asked from CloudStack at the moment
of the resize (running: its host; stopped: the host it last ran on, which attaches the volume
if needed; no VM: no host at all).

A resize that StorPool accepted but the host could not apply would leave CloudStack, StorPool
and the guest disagreeing, so any failure after the VolumeUpdate puts StorPool's size, iops,
template and `qc` tag back as they were and says so in the error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cloudstack_storpool import names
from cloudstack_storpool.bounds import Bytes, Iops
from cloudstack_storpool.driver import offerings, tags
from cloudstack_storpool.driver.snapshots import Result, storpool_volume
from cloudstack_storpool.errors import AgentError, NotFound, ValidationError

if TYPE_CHECKING:
    from cloudstack_storpool.driver.context import DriverContext

log = logging.getLogger(__name__)


class ResizeFailed(AgentError):
    """The host could not apply the resize. `rolled_back` tells whether StorPool is back at the
    old size and limits (False means an operator must look: the message says what is left)."""

    code = "resize"

    def __init__(self, message: str, *, rolled_back: bool) -> None:
        super().__init__(message)
        self.rolled_back = rolled_back


@dataclass(frozen=True)
class Resized(Result):
    volume_uuid: str
    volume: str
    old_size: int
    new_size: int
    iops: int | None
    """The iops limit written (None: unchanged)."""
    template: str | None
    host_id: str | None
    """The host told about it (None: the volume belongs to no VM)."""
    notified: bool
    """True when a running domain's disk was block-resized."""
    capacity: int | None
    """The disk capacity libvirt reports after the block resize."""


def resize_volume(
    ctx: DriverContext,
    *,
    volume_uuid: str,
    new_size: Bytes,
    shrink_ok: bool = False,
    disk_offering_id: str | None = None,
    service_offering_id: str | None = None,
    custom_iops: Iops | None = None,
) -> Resized:
    """Resize to `new_size` bytes, applying the new offering's template / `qc` / iops when one is
    given (Driver I's `offerings.resolve`; custom IOPS alone re-applies only the limit).

    Shrinking must be allowed explicitly (`shrink_ok`): data past the new end is lost. Every
    refusal happens before StorPool is touched.
    """
    names.size(new_size, "new_size")
    src = storpool_volume(ctx, volume_uuid)
    conn = ctx.conn(src.pool)
    current = conn.volume(src.name)
    if current is None:
        raise NotFound(f"volume_uuid: volume {src.name} is not on StorPool")
    old_size, old_iops, old_template = int(current.size), offerings.iops_of(current), str(current.templateName or "")
    old_qc = (current.tags or {}).get(tags.QOS_CLASS, "")
    shrinking = new_size < old_size
    if shrinking and not shrink_ok:
        raise ValidationError("new_size", f"{new_size} is smaller than the volume's {old_size} bytes; "
                                          "shrinking loses data and must be allowed with shrink_ok")

    update: dict[str, Any] = {}
    if disk_offering_id is not None or service_offering_id is not None:
        placement = offerings.resolve(
            ctx, src.pool, volume_type=src.cs.type or offerings.DATADISK, disk_offering_id=disk_offering_id,
            service_offering_id=service_offering_id, custom_iops=custom_iops, size=new_size)
        update = {"template": placement.template, "iops": offerings.explicit_iops(ctx, src.pool, placement),
                  "tags": placement.tags()}
    elif custom_iops is not None:
        update = {"iops": offerings.check_iops(custom_iops, "custom_iops") or 0}

    # Where the VM runs is asked before anything changes: a CloudStack failure here costs nothing.
    host_id: str | None = None
    vm_name: str | None = None
    if src.cs.vm_id:
        vm = ctx.cloudstack.vm(src.cs.vm_id)
        if vm is not None:
            host_id, vm_name = vm.placement_host_id, vm.instance_name or None

    conn.volume_update(src.name, size=new_size, shrink_ok=shrinking, **update)
    notified, capacity = False, None
    if host_id is not None:
        try:
            agent = ctx.agents.for_host(host_id)
            res = agent.resize(volume=src.name, size=new_size, vm=vm_name)
            notified, capacity = bool(res.get("notified")), res.get("capacity")
        except Exception as exc:
            raise _roll_back(ctx, src.name, conn, exc, host_id, old_size=old_size, new_size=new_size,
                             iops=old_iops, template=old_template if "template" in update else None,
                             qc=old_qc if "tags" in update else None) from exc
    return Resized(volume_uuid.lower(), src.name, old_size, new_size, update.get("iops"), update.get("template"),
                   host_id, notified, int(capacity) if isinstance(capacity, int) else None)


def _roll_back(
    ctx: DriverContext, name: str, conn: Any, cause: Exception, host_id: str, *, old_size: int, new_size: int,
    iops: int, template: str | None, qc: str | None,
) -> ResizeFailed:
    what = f"resize of {name} to {new_size} bytes failed on host {host_id}: {cause}"
    try:
        conn.volume_update(name, size=old_size, shrink_ok=old_size < new_size, iops=iops, template=template,
                           tags={tags.QOS_CLASS: qc} if qc is not None else None)
    except Exception as undo:
        log.error("%s; rolling StorPool back failed: %s", what, undo)
        return ResizeFailed(f"{what}; rolling StorPool back to {old_size} bytes FAILED too ({undo}): "
                            f"the volume is now {new_size} bytes on StorPool", rolled_back=False)
    log.warning("%s; StorPool size and limits restored", what)
    return ResizeFailed(f"{what}; StorPool size restored to {old_size} bytes and iops to {iops or 'no limit'}",
                        rolled_back=True)
