"""Encrypted volumes: the host's half of CloudStack's SetVolumeEncryption for StorPool.

A data disk gets a LUKS header (qemu-img, the passphrase CloudStack generated for the volume); a
root disk gets the header and then its template's cached snapshot copied into the encrypted
payload. StorPool itself only ever sees ciphertext, so snapshots, clones and backups of the
volume stay encrypted with the same passphrase without anything else doing work.

The passphrase is a request field like any other, but it is kept out of the request's repr, out
of the job's fingerprint text, out of argv (qemu reads it from an inherited memfd) and out of
every error message. Running the command again is safe: a volume whose header the passphrase
opens is not formatted again (a root disk is re-copied, so a copy cut short is completed); a
header the passphrase does not open is refused with an error naming `passphrase` and nothing is
written.
"""

from __future__ import annotations

import logging
from typing import Any

from cloudstack_storpool.agent import qemu_img
from cloudstack_storpool.agent.attach import attached, lookup, wait_for_device
from cloudstack_storpool.agent.running import Context, RunControl
from cloudstack_storpool.agentapi.command_types import EncryptRequest, snapshot_ref, volume_ref
from cloudstack_storpool.errors import ValidationError

log = logging.getLogger(__name__)

def encrypt_volume(ctx: Context, req: EncryptRequest, ctl: RunControl) -> dict[str, Any]:
    obj = lookup(ctx.conn, volume_ref(req.volume, "volume"), "volume")
    src = lookup(ctx.conn, snapshot_ref(req.source, "source")) if req.source is not None else None
    payload = obj.size - qemu_img.LUKS_OVERHEAD
    if payload < 512 * 1024:
        raise ValidationError("volume", f"{obj.ref} is {obj.size} bytes: too small for a LUKS header")
    if src is not None and src.size > payload:
        raise ValidationError("source", f"{src.ref} ({src.size} bytes) does not fit the encrypted payload "
                                        f"of {obj.ref} ({payload} bytes)")
    host = ctx.host
    with attached(ctx.conn, obj, client_id=host.client_id, dev_root=host.dev_root,
                  timeout=ctl.step_timeout(60.0)) as att:
        wait_for_device(att.device, min_size=obj.size, timeout=ctl.step_timeout(30.0))
        formatted = False
        if qemu_img.is_luks(att.device):
            try:
                qemu_img.luks_check(att.device, req.passphrase)
            except qemu_img.WrongPassphrase:
                raise ValidationError("passphrase", f"does not open the LUKS header already on {obj.ref}; "
                                                    "nothing was changed") from None
        else:
            ctl.check()
            qemu_img.luks_format(att.device, payload, req.passphrase, timeout=ctl.step_timeout(120.0))
            formatted = True
        copied = False
        if src is not None:
            with attached(ctx.conn, src, client_id=host.client_id, dev_root=host.dev_root, readonly=True,
                          timeout=ctl.step_timeout(60.0)) as satt:
                ctl.check()
                qemu_img.luks_convert(satt.device, att.device, req.passphrase, progress=ctl.progress,
                                      cancel=ctl.cancel, timeout=ctl.remaining())
                copied = True
    log.info("volume %s encrypted (LUKS%s%s)", obj.ref, ", formatted" if formatted else "",
             f", {src.ref} copied in" if src else "")
    return {"volume": obj.ref, "global_id": obj.global_id, "encrypt_format": "LUKS",
            "payload_size": payload, "formatted": formatted, "copied_from": src.ref if copied and src else None}
