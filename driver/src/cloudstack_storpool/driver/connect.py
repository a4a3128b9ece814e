"""A VM's disks on its hosts: connect, disconnect, live migration, stop.

The names are those of CloudStack's KVM storage adaptor (connectPhysicalDisk,
disconnectPhysicalDisk, disconnectPhysicalDiskByPath), which a thin in-JVM adaptor maps one to
one; the VM-level operations (migration, stop) are what CloudStack's orchestration does around
them. The work happens on the host's agent; this module only decides which host and which disks.

Live migration keeps the rule "never read-write on two hosts" everywhere except in the window
where it cannot hold: the destination connects every disk while the source still runs the
guest (`prepare_migration`), and `finish_migration` ends the window either way: after success
the source lets go, after a failure the destination does, so the volume is left on exactly the
host whose qemu still runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from cloudstack_storpool import names
from cloudstack_storpool.agentapi.client import AgentClient, AgentRequestError
from cloudstack_storpool.driver.agenttimeouts import command_timeout
from cloudstack_storpool.driver.identity import LocatedVolume, on_storpool
from cloudstack_storpool.driver.undo import undo_and_fail
from cloudstack_storpool.errors import NotFound, ValidationError
from cloudstack_storpool.names import check_client_id
from cloudstack_storpool.spconn import Ref

if TYPE_CHECKING:
    from cloudstack_storpool.cloudstack.records import Host
    from cloudstack_storpool.driver.context import DriverContext
    from cloudstack_storpool.sprecords import SpAttachment

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiskConnection:
    host_id: str
    path: str
    volume: str
    device: str
    also_attached_to: list[int] = field(default_factory=list)
    """Other StorPool clients holding the volume (during a migration: the source)."""


@dataclass(frozen=True)
class DiskDisconnection:
    host_id: str
    path: str
    handled: bool
    """False when the path is not a StorPool device (the adaptor call is for another storage)."""
    detached: bool = False


@dataclass(frozen=True)
class VmDisks:
    vm_id: str
    host_id: str
    volumes: list[str]
    """The StorPool names of the VM's disks that were handled, in CloudStack's order."""


def storpool_path(path: str, fname: str = "path") -> str:
    """The StorPool name for a device path CloudStack hands the adaptor; ValidationError if not ours."""
    if not isinstance(path, str) or not path.startswith("/dev/"):
        raise ValidationError(fname, f"must be a StorPool device path (/dev/storpool-byid/<globalId>), got {path!r}")
    return names.path_to_name(path, fname)


def host_and_agent(ctx: DriverContext, host_id: str, fname: str = "host_id") -> tuple[Host, AgentClient]:
    """A CloudStack host and its agent; NotFound naming `fname` for a host CloudStack does not know."""
    if not isinstance(host_id, str) or not host_id:
        raise ValidationError(fname, "is required")
    host = ctx.cloudstack.host(host_id)
    if host is None:
        raise NotFound(f"{fname}: CloudStack has no host {host_id}")
    return host, ctx.agents.client(host)


def agent_of(ctx: DriverContext, host_id: str, fname: str = "host_id") -> AgentClient:
    return host_and_agent(ctx, host_id, fname)[1]


def on_host(what: str, fname: str, call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run an agent call; the agent's refusals come back naming the caller's field `fname`
    (the agent knows the volume by its StorPool name, the caller by a path or a VM). Any other
    failure (the agent down, contact lost mid-job, a command that failed there) stays an agent
    error, naming the host and the step: an upstream failure, never a bug of the service."""
    try:
        return call()
    except AgentRequestError as exc:
        if exc.code == "not-found":
            raise NotFound(f"{fname}: {exc.message}") from None
        if exc.code == "invalid":
            raise ValidationError(fname if exc.field in (None, "volume") else exc.field, exc.message) from None
        raise exc.during(what) from exc


def connect_physical_disk(ctx: DriverContext, *, host_id: str, path: str) -> DiskConnection:
    """Attach the volume at `path` read-write to the host's StorPool client and wait until its
    device is usable. Other hosts keep their attachments (a live migration's source)."""
    name = storpool_path(path)
    agent = agent_of(ctx, host_id)
    res = on_host(f"connect {path}", "path", lambda: agent.connect(volume=name, timeout=command_timeout(ctx)))
    others = res.get("also_attached_to") or []
    return DiskConnection(host_id, path, str(res["volume"]), str(res["device"]), [int(c) for c in others])


def disconnect_physical_disk(ctx: DriverContext, *, host_id: str, path: str) -> DiskDisconnection:
    """Detach the volume at `path` from the host (retried while busy, forced at the end)."""
    name = storpool_path(path)
    agent = agent_of(ctx, host_id)
    res = on_host(f"disconnect {path}", "path", lambda: agent.disconnect(volume=name, timeout=command_timeout(ctx)))
    return DiskDisconnection(host_id, path, True, bool(res.get("detached")))


def disconnect_physical_disk_by_path(ctx: DriverContext, *, host_id: str, path: str) -> DiskDisconnection:
    """CloudStack asks every adaptor to disconnect a local path: a path that is not a StorPool
    device is answered `handled: false` (not an error), so the next adaptor gets it."""
    try:
        storpool_path(path)
    except ValidationError:
        return DiskDisconnection(host_id, path, False)
    return disconnect_physical_disk(ctx, host_id=host_id, path=path)


def vm_disks(ctx: DriverContext, vm_id: str, fname: str = "vm_id") -> list[LocatedVolume]:
    """The VM's volumes that live on our pools (others belong to other adaptors)."""
    if not isinstance(vm_id, str) or not vm_id:
        raise ValidationError(fname, "is required")
    if ctx.cloudstack.vm(vm_id) is None:
        raise NotFound(f"{fname}: CloudStack has no VM {vm_id}")
    out = []
    for vol in ctx.cloudstack.volumes(vm_id=vm_id):
        src = on_storpool(ctx, vol)
        if src is not None:
            out.append(src)
    return out


def _disconnect_all(ctx: DriverContext, vm_id: str, host_id: str, fname: str) -> VmDisks:
    disks = vm_disks(ctx, vm_id)
    agent = agent_of(ctx, host_id, fname)
    for d in disks:
        on_host(f"disconnect {d.name}", "vm_id", partial(agent.disconnect, volume=d.name))
    return VmDisks(vm_id, host_id, [d.name for d in disks])


def prepare_migration(ctx: DriverContext, *, vm_id: str, dest_host_id: str) -> VmDisks:
    """Before a live migration: the destination connects every disk of the VM while the source
    keeps it (both hosts hold the volume read-write only for the migration).

    On a failure part way (the destination's agent died, lost contact, StorPool refused an
    attach) what the destination attached is detached again on StorPool itself before the
    answer: the agent that failed cannot be relied on to do it, and a disk left read-write on
    two hosts outside a migration is what this operation must never leave. Only the
    destination's client is detached, and only from disks it did not hold before the call; the
    source keeps its attachments untouched."""
    disks = vm_disks(ctx, vm_id)
    host, agent = host_and_agent(ctx, dest_host_id, "dest_host_id")
    if not disks:
        return VmDisks(vm_id, dest_host_id, [])
    client = _client_id(host, agent)
    held = _held_by(ctx, disks, client)
    done: list[str] = []
    try:
        for d in disks:
            on_host(f"connect {d.name}", "vm_id", partial(agent.connect, volume=d.name))
            done.append(d.name)
    except BaseException as exc:
        tried = disks[:len(done) + 1]  # the one that failed may have been attached before the failure
        err = undo_and_fail(f"prepare_migration of VM {vm_id} to host {dest_host_id}", exc,
                            f"whatever the destination attached during the call was detached on StorPool "
                            f"(client {client})",
                            partial(_detach_new, ctx, tried, client, held))
        if not isinstance(exc, Exception):
            raise
        raise err from exc
    return VmDisks(vm_id, dest_host_id, done)


def _client_id(host: Host, agent: AgentClient) -> int:
    """The host's StorPool client id: its `SP_OURID` detail, else what its agent reports."""
    if host.sp_client_id is not None:
        return host.sp_client_id
    facts = on_host("facts", "dest_host_id", agent.facts)
    return check_client_id(facts.get("client_id"), "client_id")


def _held_by(ctx: DriverContext, disks: list[LocatedVolume], client: int) -> set[str]:
    """The names of the disks `client` holds now: one AttachmentsList per StorPool endpoint."""
    listed: dict[int, list[SpAttachment]] = {}
    out = set()
    for d in disks:
        conn = ctx.conn(d.pool)
        found = listed.get(id(conn))
        if found is None:
            found = listed[id(conn)] = [a for a in conn.attachments() if a.client == client]
        if any((a.global_id == d.name[1:]) if d.name.startswith("~") else (a.name == d.name) for a in found):
            out.add(d.name)
    return out


def _detach_new(ctx: DriverContext, disks: list[LocatedVolume], client: int, held: set[str]) -> None:
    """Detach `client` from every disk it holds now and did not hold before (`held`). Forced:
    nothing on a destination uses a disk before the migration starts."""
    new = _held_by(ctx, disks, client) - held
    for d in disks:
        if d.name in new:
            ctx.conn(d.pool).detach(Ref("volume", d.name), client, force=True)
            log.warning("prepare_migration failed: detached %s from client %d on StorPool", d.name, client)


def finish_migration(ctx: DriverContext, *, vm_id: str, source_host_id: str, dest_host_id: str,
                     succeeded: bool) -> VmDisks:
    """After a live migration: success detaches the source (its qemu is gone), failure detaches
    the destination (the guest still runs on the source). Returns the host that let go."""
    if source_host_id == dest_host_id:
        raise ValidationError("dest_host_id", "must differ from source_host_id")
    agent_of(ctx, source_host_id, "source_host_id")
    agent_of(ctx, dest_host_id, "dest_host_id")
    loser, fname = (source_host_id, "source_host_id") if succeeded else (dest_host_id, "dest_host_id")
    return _disconnect_all(ctx, vm_id, loser, fname)


def vm_stopped(ctx: DriverContext, *, vm_id: str, host_id: str) -> VmDisks:
    """The VM stopped on `host_id`: its disks are disconnected from that host."""
    return _disconnect_all(ctx, vm_id, host_id, "host_id")
