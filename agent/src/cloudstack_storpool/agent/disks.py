"""Connect and disconnect a VM's disks on this host, in the terms of CloudStack's KVM storage
adaptor (connectPhysicalDisk, disconnectPhysicalDisk, disconnectPhysicalDiskByPath).

Connect attaches the volume read-write to this host's client *without* taking it from any other
client: during a live migration the destination must attach while the source qemu still holds
the disk (the Java plugin's `attach ... here onRemoteAttached export`). Keeping a volume off two
hosts outside a migration is the job of the safe start / HA hand-over (`prepare_start`), which
force-detaches everywhere else first.

Disconnect detaches with retries while the device is still open (a qemu that is still exiting)
and forces only at the end, as the Java adaptor does. Both are idempotent: connecting a
connected volume or disconnecting one that is not attached (or no longer exists) is success.
"""

from __future__ import annotations

import logging
from typing import Any

from cloudstack_storpool import names
from cloudstack_storpool.agent.attach import attach, attachments_of, detach, lookup, wait_for_device
from cloudstack_storpool.agent.running import Context, RunControl
from cloudstack_storpool.agentapi.command_types import ConnectRequest, DisconnectRequest, volume_ref
from cloudstack_storpool.errors import NotFound, ValidationError

log = logging.getLogger(__name__)

def connect(ctx: Context, req: ConnectRequest, ctl: RunControl) -> dict[str, Any]:
    """Attach rw here and wait until the device has its full size; other clients keep theirs."""
    obj = lookup(ctx.conn, volume_ref(req.volume, "volume"), "volume")
    att = attach(ctx.conn, obj, client_id=ctx.host.client_id, dev_root=ctx.host.dev_root,
                 timeout=ctl.step_timeout(60.0))
    # Usable means the whole disk: a device node that shows fewer bytes than the volume has
    # would make qemu see a smaller disk than CloudStack gave the guest.
    wait_for_device(att.device, min_size=obj.size, timeout=ctl.step_timeout(30.0))
    others = sorted(int(a.client) for a in attachments_of(ctx.conn, obj) if int(a.client) != ctx.host.client_id)
    return {"volume": obj.ref, "global_id": obj.global_id, "device": att.device,
            "attached_here": att.attached_here, "also_attached_to": others}


def disconnect(ctx: Context, req: DisconnectRequest, ctl: RunControl) -> dict[str, Any]:
    """Detach from this host's client; a volume that is gone or not attached here is success."""
    name = volume_ref(req.volume, "volume")
    try:
        obj = lookup(ctx.conn, name, "volume")
    except NotFound:
        log.info("disconnect %s: no such volume, nothing to detach", name)
        return {"volume": name, "detached": False, "reason": "no such volume"}
    issued = detach(ctx.conn, obj, client_id=ctx.host.client_id, retries=req.retries, delay=req.delay,
                    force_at_end=req.force)
    return {"volume": obj.ref, "global_id": obj.global_id, "detached": issued}


def is_storpool_path(path: str) -> bool:
    """Whether a device path is one of ours (the by-path call is made for every adaptor's disks)."""
    try:
        names.path_to_name(path, "path")
    except ValidationError:
        return False
    return True
