"""Encrypted volumes: CloudStack's SetVolumeEncryption for StorPool, on a KVM host.

CloudStack generates a passphrase per encrypted volume and hands it to the plugin; a host of the
pool writes the LUKS header with it (and, for a root disk, copies the template's cached snapshot
into the encrypted payload), as the Java plugin's StorPoolSetVolumeEncryptionCommandWrapper does.
The passphrase travels only in the request to the agent; it is in no log line, no error and no
command line here or there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cloudstack_storpool.agentapi.client import AgentRequestError
from cloudstack_storpool.agentapi.command_types import check_passphrase
from cloudstack_storpool.driver import spclusters
from cloudstack_storpool.driver.connect import storpool_path
from cloudstack_storpool.driver.identity import locate
from cloudstack_storpool.driver.revert import refuse_running
from cloudstack_storpool.driver.snapshots import on_any_host
from cloudstack_storpool.errors import NotFound, ValidationError
from cloudstack_storpool.poolconfig import Secret
from cloudstack_storpool.uuids import Uuid

if TYPE_CHECKING:
    from cloudstack_storpool.driver.context import DriverContext


STARTING = "Starting"
"""CloudStack creates and encrypts a VM's new volumes in VolumeOrchestrator.prepare, while the VM
is Starting and before its host gets StartCommand: no guest has the disk open yet."""


@dataclass(frozen=True)
class Encrypted:
    volume_uuid: Uuid
    volume: str
    encrypt_format: str
    """CloudStack's name of the format (QemuObject.EncryptFormat: `luks`), which it keeps as the
    volume's `encrypt_format` and shows as `encryptformat`."""
    payload_size: int
    formatted: bool
    """False when the volume already had a header the passphrase opens (a retry)."""
    copied_from: str | None
    agent: str


def set_volume_encryption(ctx: DriverContext, *, volume_uuid: Uuid, passphrase: Secret,
                          source_path: str | None = None) -> Encrypted:
    """LUKS-format the volume with `passphrase`; with `source_path` (a root disk's template
    snapshot, `/dev/storpool-byid/<globalId>`), copy it into the encrypted payload."""
    check_passphrase(passphrase)
    source = storpool_path(source_path, "source_path") if source_path is not None else None
    src = locate(ctx, volume_uuid)
    vm = ctx.cloudstack.vm(src.cs.vm_id) if src.cs.vm_id else None
    if vm is None or vm.state != STARTING:
        refuse_running(vm, f"encryption of volume {volume_uuid}")
    try:
        agent, res = on_any_host(ctx, src.pool, lambda c: c.encrypt_volume(
            volume=src.name, passphrase=passphrase, source=source, progress=ctx.progress),
            spclusters.holding(ctx, src.pool, src.global_id))
    except AgentRequestError as exc:
        if exc.code == "not-found":
            raise NotFound(f"{'source_path' if source and source in exc.message else 'volume_uuid'}: "
                           f"{exc.message}") from None
        if exc.code == "invalid" and exc.field in ("passphrase", "source", "volume"):
            fname = {"source": "source_path", "volume": "volume_uuid"}.get(exc.field, exc.field)
            raise ValidationError(fname, exc.message.removeprefix(f"{exc.field}: ")) from None
        raise
    copied = res.get("copied_from")
    return Encrypted(volume_uuid.lower(), src.name, str(res.get("encrypt_format", "luks")).lower(),
                     int(res.get("payload_size", 0)), bool(res.get("formatted")),
                     str(copied) if copied else None, agent)
