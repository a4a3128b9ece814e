"""The agent's commands: one function each, one typed request each (`agentapi.command_types`),
and the command table: an explicit list of every command the agent runs, its request type and its
handler (the disk commands' handlers live in `disks`, encryption's in `luks`).

Requests are parsed from JSON and validated before anything is touched, with errors naming
the field. Every command is idempotent: running it again after a success (or after a failure
part-way) converges on the same end state and leaves nothing attached that it attached.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cloudstack_storpool.agent import disks, luks, partials, qemu_img, secondary
from cloudstack_storpool.agent.attach import (
    Attachment,
    Kind,
    StorPoolObject,
    attach,
    attached,
    attachments_of,
    detach,
    device_size,
    lookup,
    wait_for_device,
)
from cloudstack_storpool.agent.resize import libvirt_version, not_applied, notify_resize
from cloudstack_storpool.agent.running import Context, RunControl
from cloudstack_storpool.agentapi.command_types import (
    FORMATS,
    BackupSnapshotRequest,
    ConnectRequest,
    CopyTemplateRequest,
    CopyToVolumeRequest,
    CopyVolumeOutRequest,
    DisconnectRequest,
    EncryptRequest,
    FactsRequest,
    PrepareStartRequest,
    Request,
    ResizeRequest,
    snapshot_ref,
    volume_ref,
)
from cloudstack_storpool.errors import NotFound, ProjectError, SpBusy, ValidationError
from cloudstack_storpool.version import __version__

log = logging.getLogger(__name__)


def _is_block(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def _round_up(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def _source_image(ctx: Context, req: CopyToVolumeRequest) -> tuple[str, qemu_img.ImageInfo]:
    src = secondary.resolve(req.store, req.path, mount_root=ctx.host.mount_root,
                            allowed_roots=ctx.host.allowed_roots())
    if not os.path.isfile(src):
        raise NotFound(f"path: {req.path!r} does not exist in {req.store}")
    info = qemu_img.info(src, fmt=req.source_format)
    if info.format not in FORMATS:
        raise ValidationError("source_format", f"image is {info.format}; only raw and qcow2 are accepted")
    if info.backing_file:
        # A backing file would make qemu-img open another host path named inside the image.
        raise ValidationError("path", "images with a backing file are refused")
    if info.data_file:
        # So would an external data file: qemu-img would copy that host file into the volume.
        raise ValidationError("path", "images with an external data file are refused")
    return src, info


def copy_to_volume(ctx: Context, req: CopyToVolumeRequest, ctl: RunControl) -> dict[str, Any]:
    """Secondary-storage image -> StorPool volume (raw), growing the volume first if needed."""
    src, info = _source_image(ctx, req)
    ctl.check()
    name = volume_ref(req.volume, "volume")
    obj = lookup(ctx.conn, name, "volume")
    size = obj.size
    if size < info.virtual_size:
        size = _round_up(info.virtual_size, 512)
        log.info("growing %s from %d to %d bytes for the image", obj.ref, obj.size, size)
        ctx.conn.volume_update(obj.ref, size=size)
    with attached(ctx.conn, obj, client_id=ctx.host.client_id, dev_root=ctx.host.dev_root,
                  timeout=ctl.step_timeout(60.0)) as att:
        wait_for_device(att.device, min_size=info.virtual_size, timeout=ctl.step_timeout(30.0))
        ctl.check()
        block = _is_block(att.device)
        opts = qemu_img.ConvertOptions(
            existing_target=True,
            target_is_zero=req.target_is_zero,
            target_cache="none" if block else None,
            parallel_writes=True,
        )
        qemu_img.convert(src, att.device, src_format=info.format, dst_format="raw", options=opts,
                         progress=ctl.progress, cancel=ctl.cancel, timeout=ctl.remaining())
    return {
        "volume": obj.ref,
        "global_id": obj.global_id,
        "size": size,
        "virtual_size": info.virtual_size,
        "source_format": info.format,
    }


def _copy_out(ctx: Context, name: str, kind: Kind, store: str, path: str, fmt: str, compress: bool,
              ctl: RunControl) -> dict[str, Any]:
    """StorPool object -> file on secondary storage, never leaving a half-written file: the
    copy goes to a temporary name in the same directory and is renamed when complete."""
    dest = secondary.resolve(store, path, mount_root=ctx.host.mount_root, allowed_roots=ctx.host.allowed_roots())
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    # A retry of this target after a crash: the earlier attempt's partial file goes first.
    partials.remove_own(os.path.dirname(dest), ctx.host.client_id, os.path.basename(dest))
    with attached(ctx.conn, name, kind=kind, client_id=ctx.host.client_id, dev_root=ctx.host.dev_root,
                  readonly=True, timeout=ctl.step_timeout(60.0)) as att, \
            partials.partial(dest, ctx.host.client_id) as tmp:
        ctl.check()
        # The image's virtual size is the device's: qcow2 and raw output both keep it, so no
        # `qemu-img info` on the result is needed to report it.
        virtual_size = device_size(att.device)
        opts = qemu_img.ConvertOptions(compress=compress, source_cache="none" if _is_block(att.device) else None)
        qemu_img.convert(att.device, tmp, src_format="raw", dst_format=fmt, options=opts,
                         progress=ctl.progress, cancel=ctl.cancel, timeout=ctl.remaining())
        qemu_img.fsync_path(tmp)
        os.replace(tmp, dest)
        qemu_img.fsync_path(os.path.dirname(dest))
    return {
        kind: att.object.ref,
        "global_id": att.object.global_id,
        "path": path,
        "format": fmt,
        "virtual_size": virtual_size,
        "physical_size": os.path.getsize(dest),
    }


def backup_snapshot(ctx: Context, req: BackupSnapshotRequest, ctl: RunControl) -> dict[str, Any]:
    """StorPool snapshot -> qcow2 on secondary storage (the non-bypass snapshot backup)."""
    return _copy_out(ctx, snapshot_ref(req.snapshot, "snapshot"), "snapshot", req.store, req.path,
                     "qcow2", req.compress, ctl)


def copy_volume_out(ctx: Context, req: CopyVolumeOutRequest, ctl: RunControl) -> dict[str, Any]:
    """StorPool volume -> secondary storage (volume export, template from volume)."""
    return _copy_out(ctx, volume_ref(req.volume, "volume"), "volume", req.store, req.path,
                     req.format, req.compress, ctl)


def resize(ctx: Context, req: ResizeRequest, ctl: RunControl) -> dict[str, Any]:
    """Make a running VM see its grown volume. StorPool's size was already changed by the
    driver; this waits until this host's device shows it, then calls libvirt block resize.

    Every error this command raises happened before the guest's disk changed (the last step
    that can fail is the block resize itself), and says so (`applied: false`): the driver
    rolls StorPool back only on that confirmation."""
    try:
        return _resize(ctx, req, ctl)
    except ProjectError as exc:
        raise not_applied(exc) from None


def _resize(ctx: Context, req: ResizeRequest, ctl: RunControl) -> dict[str, Any]:
    obj = lookup(ctx.conn, volume_ref(req.volume, "volume"), "volume")
    if obj.size < req.size:
        raise ValidationError("size", f"volume {obj.ref} is {obj.size} bytes in StorPool, not {req.size}")
    result: dict[str, Any] = {"volume": obj.ref, "size": req.size, "notified": False}
    if req.vm is None:
        result["reason"] = "no VM given"
        return result
    device = ctx.host.device_path(obj.global_id)
    candidates = [device, os.path.join(ctx.host.dev_root, "storpool", obj.name)] if obj.name else [device]
    if os.path.exists(device):
        wait_for_device(device, min_size=req.size, timeout=ctl.step_timeout(30.0))
    ctl.check()
    res = notify_resize(ctx.host.libvirt_uri, req.vm, candidates, req.size)
    result.update(notified=res.notified, domain=res.domain, disk=res.disk, capacity=res.capacity)
    if res.reason:
        result["reason"] = res.reason
    return result


def _detach_others(ctx: Context, obj: StorPoolObject, others: list[int]) -> None:
    """Force-detach from other clients. A client that is down (a fenced host: the HA case) cannot
    confirm; StorPool has still taken the volume from it, which is what counts, so a missing
    confirmation is accepted once the attachment list shows the volume gone from there."""
    try:
        ctx.conn.detach(obj, others, force=True)
    except SpBusy:
        still = sorted({int(a.client) for a in attachments_of(ctx.conn, obj)} & set(others))
        if still:
            raise
        log.warning("safe start: clients %s did not confirm the detach of %s (down?); StorPool no longer "
                    "attaches it there", others, obj.ref)


def prepare_start(ctx: Context, req: PrepareStartRequest, ctl: RunControl) -> dict[str, Any]:
    """Safe VM start: force-detach each volume from every other client, so two hosts can
    never write one disk, then (optionally) attach it here read-write."""
    out = []
    cid = ctx.host.client_id
    made: list[Attachment] = []
    try:
        for i, ref in enumerate(req.volumes):
            ctl.check()
            obj = lookup(ctx.conn, volume_ref(ref, f"volumes[{i}]"), "volume")
            others = sorted({a.client for a in attachments_of(ctx.conn, obj) if a.client != cid})
            if others:
                log.warning("safe start: force-detaching %s from clients %s", obj.ref, others)
                _detach_others(ctx, obj, others)
            entry: dict[str, Any] = {"volume": obj.ref, "global_id": obj.global_id, "detached_from": others}
            if req.attach:
                att = attach(ctx.conn, obj, client_id=cid, dev_root=ctx.host.dev_root,
                             timeout=ctl.step_timeout(60.0))
                if att.attached_here:
                    made.append(att)
                entry["device"] = att.device
            out.append(entry)
    except BaseException:
        # The VM will not start with part of its disks: undo the attachments this call made
        # (never one that was already there), so no device is left attached on a failure.
        for att in made:
            try:
                detach(ctx.conn, att.object, client_id=cid)
            except Exception:
                log.exception("safe start: cannot detach %s after a failure", att.object.ref)
        raise
    return {"volumes": out}


def facts(ctx: Context, req: FactsRequest, ctl: RunControl) -> dict[str, Any]:
    """What the driver needs to know about this host; never fails, reports what it cannot reach."""
    out: dict[str, Any] = {
        "client_id": ctx.host.client_id,
        "dev_root": ctx.host.dev_root,
        "agent_version": __version__,
        "cluster_id": ctx.host.storpool_cluster_id(),
        "block_service_running": ctx.host.block_service_running(),
    }
    sp: dict[str, Any] = {"reachable": False}
    try:
        services = getattr(ctx.conn, "services", None)
        if callable(services):
            svc = services()
            clients = getattr(svc, "clients", None) or {}
            me = clients.get(ctx.host.client_id) or clients.get(str(ctx.host.client_id))
            if me is None:
                for c in clients.values():
                    if int(getattr(c, "nodeId", getattr(c, "id", -1))) == ctx.host.client_id:
                        me = c
                        break
            if me is not None:
                sp["client_status"] = str(getattr(me, "status", ""))
                sp["client_version"] = str(getattr(me, "version", ""))
        else:
            ctx.conn.attachments()
        sp["reachable"] = True
    except Exception as exc:
        sp["error"] = str(exc)
    out["storpool"] = sp
    try:
        out["qemu_img"] = qemu_img.version()
    except Exception as exc:
        out["qemu_img_error"] = str(exc)
    try:
        out["libvirt"] = libvirt_version(ctx.host.libvirt_uri)
    except Exception as exc:
        out["libvirt_error"] = str(exc)
    return out


@dataclass(frozen=True)
class Command:
    name: str
    request: type[Request]
    run: Callable[[Context, Any, RunControl], dict[str, Any]]
    long_running: bool


TABLE: tuple[Command, ...] = (
    # A template fill is a copy into a volume; only its request's defaults differ.
    Command("copy_template", CopyTemplateRequest, copy_to_volume, True),
    Command("copy_to_volume", CopyToVolumeRequest, copy_to_volume, True),
    Command("backup_snapshot", BackupSnapshotRequest, backup_snapshot, True),
    Command("copy_volume_out", CopyVolumeOutRequest, copy_volume_out, True),
    Command("resize", ResizeRequest, resize, False),
    Command("prepare_start", PrepareStartRequest, prepare_start, False),
    Command("facts", FactsRequest, facts, False),
    Command("connect", ConnectRequest, disks.connect, False),
    Command("disconnect", DisconnectRequest, disks.disconnect, False),
    Command("encrypt_volume", EncryptRequest, luks.encrypt_volume, True),
)
COMMANDS: dict[str, Command] = {c.name: c for c in TABLE}


def parse(command: str, args: Any) -> tuple[Command, Request]:
    """Look up a command and validate its arguments; ValidationError names the bad field."""
    cmd = COMMANDS.get(command)
    if cmd is None:
        raise ValidationError("command", f"unknown command {command!r} (known: {', '.join(sorted(COMMANDS))})")
    return cmd, cmd.request.from_json(args if args is not None else {})


def execute(ctx: Context, command: str, args: Any, ctl: RunControl | None = None) -> dict[str, Any]:
    """Parse and run one command synchronously (the `agent run` path and the job body)."""
    cmd, req = parse(command, args)
    ctl = ctl or RunControl(deadline=time.monotonic() + req.timeout)
    return cmd.run(ctx, req, ctl)
