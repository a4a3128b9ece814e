"""Resize a volume: StorPool first, then the host where its VM runs, rolled back on failure.

StorPool changes the size of the volume on every host at once, but a running qemu caches its
disk's size: the host running the VM must call libvirt's block resize so the guest sees the new
size now rather than after a restart. Which host that is comes from the caller, as CloudStack
hands it to the Java driver (ResizeVolumePayload.hosts: the VM's host, else its last host; none
for a volume without a VM): the public API does not show a stopped VM's last host, so the
service cannot work it out itself. The hosts are tried in order, moving on only while an agent
is unreachable, as StorageManagerImpl.sendToPool does; the first that answers is told.

When the host fails after StorPool accepted the new size, what happens next depends on what
the host can vouch for. If its agent confirms the guest's disk was not changed (every error of
its `resize` command does: the block resize is its last step that can fail), StorPool's size,
iops, template and `qc` are put back as they were. Otherwise (contact lost, the agent gone,
an answer without that confirmation) libvirt may already have grown the disk under the running
guest, and shrinking StorPool beneath it would be worse than leaving it grown: the error says
the volume is left at the new size and nothing is undone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cloudstack_storpool import names
from cloudstack_storpool.agentapi.client import AgentRequestError
from cloudstack_storpool.bounds import Bytes, Iops
from cloudstack_storpool.driver import offerings, tags
from cloudstack_storpool.driver.agenttimeouts import command_timeout
from cloudstack_storpool.driver.identity import LocatedVolume, locate
from cloudstack_storpool.errors import AgentError, NotFound, ValidationError
from cloudstack_storpool.uuids import Uuid

if TYPE_CHECKING:
    from cloudstack_storpool.agentapi.client import AgentClient
    from cloudstack_storpool.driver.context import DriverContext
    from cloudstack_storpool.spconn import StorPoolConn

log = logging.getLogger(__name__)


class ResizeFailed(AgentError):
    """The host could not apply the resize. `rolled_back` tells whether StorPool is back at the
    old size and limits (False: it is left at the new size, the message says why)."""

    code = "resize"

    def __init__(self, message: str, *, rolled_back: bool) -> None:
        super().__init__(message)
        self.rolled_back = rolled_back


@dataclass(frozen=True)
class Resized:
    volume_uuid: Uuid
    volume: str
    old_size: int
    new_size: int
    iops: int | None
    """The iops limit written (None: unchanged)."""
    template: str | None
    host_id: str | None
    """The host told about it (None: no host was given)."""
    notified: bool
    """True when a running domain's disk was block-resized."""
    capacity: int | None
    """The disk capacity libvirt reports after the block resize."""


def resize_volume(
    ctx: DriverContext,
    *,
    volume_uuid: Uuid,
    new_size: Bytes,
    host_ids: list[str],
    instance_name: str | None = None,
    shrink_ok: bool = False,
    disk_offering_id: str | None = None,
    service_offering_id: str | None = None,
    custom_iops: Iops | None = None,
) -> Resized:
    """Resize to `new_size` bytes, applying the new offering's template / `qc` / iops when one is
    given (`offerings.resolve`, as volume creation does; custom IOPS alone re-applies only the limit).

    `host_ids` are the hosts to tell, in the order to try them (ResizeVolumePayload.hosts; empty:
    no host, the volume belongs to no VM or its VM never ran), and `instance_name` the VM's
    domain (ResizeVolumePayload.instanceName; None, or CloudStack's "none", without a VM).

    Shrinking must be allowed explicitly (`shrink_ok`): data past the new end is lost. Every
    refusal happens before StorPool is touched.
    """
    names.size(new_size, "new_size")
    hosts = _hosts(host_ids)
    vm_name = None if instance_name in (None, "", NO_INSTANCE) else instance_name
    if hosts and vm_name is None:
        raise ValidationError("instance_name", "is required with host_ids: the VM whose host is told "
                                               "(CloudStack hands no host for a volume without a VM)")
    src = locate(ctx, volume_uuid)
    conn = ctx.conn(src.pool)
    before = _Before.read(conn, src.name)
    shrinking = new_size < before.size
    if shrinking and not shrink_ok:
        raise ValidationError("new_size", f"{new_size} is smaller than the volume's {before.size} bytes; "
                                          "shrinking loses data and must be allowed with shrink_ok")
    update = _offering_update(ctx, src, new_size, disk_offering_id, service_offering_id, custom_iops)
    # The hosts' agents are found before anything changes: an unknown host costs nothing.
    agents = [(hid, _agent_of(ctx, hid)) for hid in hosts]
    conn.volume_update(src.name, size=new_size, shrink_ok=shrinking, **update)
    host_id, notified, capacity = None, False, None
    if agents:
        try:
            host_id, res = _tell_first_reachable(agents, src.name, new_size, vm_name, command_timeout(ctx))
            notified, capacity = bool(res.get("notified")), res.get("capacity")
        except _HostFailed as failed:
            exc = failed.__cause__
            assert exc is not None
            what = f"resize of {src.name} to {new_size} bytes failed on host {failed.host_id}: {exc}"
            if not _confirmed_not_applied(exc):
                raise _left_as_asked(what, new_size) from exc
            raise _roll_back(conn, src.name, what, before, new_size, update) from exc
    return Resized(volume_uuid.lower(), src.name, before.size, new_size, update.get("iops"), update.get("template"),
                   host_id, notified, int(capacity) if isinstance(capacity, int) else None)


def running_placement(ctx: DriverContext, volume_uuid: str) -> tuple[list[str], str | None]:
    """The hosts and instance name a caller outside the management server (the operator CLI)
    can give: the host of the volume's VM while it runs, read through the public API. A stopped
    VM's last host is not in that API, so none is given for it; its guest reads the new size
    when it next starts."""
    vol = ctx.cloudstack.volume(volume_uuid)
    vm = ctx.cloudstack.vm(vol.vm_id) if vol is not None and vol.vm_id else None
    if vm is None:
        return [], None
    return ([vm.host_id] if vm.host_id else []), vm.instance_name or None


NO_INSTANCE = "none"
"""What VolumeApiServiceImpl puts in ResizeVolumePayload.instanceName for a volume without a VM."""


def _hosts(host_ids: object) -> list[str]:
    """The host ids as given, each a non-empty string, no repeats (CloudStack sends at most one)."""
    if not isinstance(host_ids, list):
        raise ValidationError("host_ids", "must be a list of CloudStack host ids (empty: no host to tell)")
    out: list[str] = []
    for i, hid in enumerate(host_ids):
        if not isinstance(hid, str) or not hid.strip():
            raise ValidationError(f"host_ids[{i}]", "must be a CloudStack host id")
        if hid not in out:
            out.append(hid)
    return out


def _agent_of(ctx: DriverContext, host_id: str) -> AgentClient:
    try:
        return ctx.agents.for_host(host_id)
    except NotFound:
        raise NotFound(f"host_ids: CloudStack has no host {host_id}") from None


class _HostFailed(Exception):
    """The host that answered (or the last one tried) failed; the cause is its error."""

    def __init__(self, host_id: str) -> None:
        super().__init__(host_id)
        self.host_id = host_id


def _tell_first_reachable(agents: list[tuple[str, AgentClient]], volume: str, size: int,
                          vm_name: str | None, timeout: float) -> tuple[str, dict[str, Any]]:
    """Tell the first agent that can be reached (StorageManagerImpl.sendToPool moves on only
    while a host is unavailable: a command that ran and failed is the answer)."""
    for i, (hid, agent) in enumerate(agents):
        try:
            return hid, agent.resize(volume=volume, size=size, vm=vm_name, timeout=timeout)
        except AgentRequestError as exc:
            if exc.code == "unreachable" and i + 1 < len(agents):
                log.warning("agent of host %s unreachable; telling the next host of the resize", hid)
                continue
            raise _HostFailed(hid) from exc
        except Exception as exc:
            raise _HostFailed(hid) from exc
    raise AssertionError("no agents")  # pragma: no cover - callers pass at least one


@dataclass(frozen=True)
class _Before:
    """What a rollback restores: StorPool's size, limit, template and `qc` before the resize."""

    size: int
    iops: int
    template: str
    qc: str

    @classmethod
    def read(cls, conn: StorPoolConn, name: str) -> _Before:
        current = conn.volume(name)
        if current is None:
            raise NotFound(f"volume_uuid: volume {name} is not on StorPool")
        return cls(current.size, current.iops, current.template, current.tags.get(tags.QOS_CLASS, ""))


def _offering_update(ctx: DriverContext, src: LocatedVolume, new_size: int, disk_offering_id: str | None,
                     service_offering_id: str | None, custom_iops: int | None) -> dict[str, Any]:
    """The template / iops / `qc` a new offering (or custom IOPS alone) asks for; {} for neither."""
    if disk_offering_id is not None or service_offering_id is not None:
        placement = offerings.resolve(
            ctx, src.pool, volume_type=src.cs.type or offerings.DATADISK, disk_offering_id=disk_offering_id,
            service_offering_id=service_offering_id, custom_iops=custom_iops, size=new_size)
        return {"template": placement.template, "iops": offerings.explicit_iops(ctx, src.pool, placement),
                "tags": placement.tags()}
    if custom_iops is not None:
        return {"iops": offerings.check_iops(custom_iops, "custom_iops") or 0}
    return {}


def _confirmed_not_applied(exc: BaseException) -> bool:
    """The agent answered that the guest's disk was not changed. Nothing else counts: an agent
    that could not be reached may have been reached, and a lost contact may have grown the disk."""
    return isinstance(exc, AgentRequestError) and exc.applied is False


def _left_as_asked(what: str, new_size: int) -> ResizeFailed:
    log.error("%s; the host may have applied it, so StorPool is left at %d bytes", what, new_size)
    return ResizeFailed(f"{what}; the host did not confirm it left the disk unchanged, so the volume is left at "
                        f"{new_size} bytes on StorPool (not shrunk back under a guest that may already see it); "
                        "retry the resize, or check the VM's disk size", rolled_back=False)


def _roll_back(conn: StorPoolConn, name: str, what: str, before: _Before, new_size: int,
               update: dict[str, Any]) -> ResizeFailed:
    try:
        conn.volume_update(name, size=before.size, shrink_ok=before.size < new_size, iops=before.iops,
                           template=before.template if "template" in update else None,
                           tags={tags.QOS_CLASS: before.qc} if "tags" in update else None)
    except Exception as undo:
        log.error("%s; rolling StorPool back failed: %s", what, undo)
        return ResizeFailed(f"{what}; rolling StorPool back to {before.size} bytes FAILED too ({undo}): "
                            f"the volume is now {new_size} bytes on StorPool", rolled_back=False)
    log.warning("%s; StorPool size and limits restored", what)
    return ResizeFailed(f"{what}; the host confirmed it changed nothing, so StorPool's size was restored to "
                        f"{before.size} bytes and iops to {before.iops or 'no limit'}", rolled_back=True)
