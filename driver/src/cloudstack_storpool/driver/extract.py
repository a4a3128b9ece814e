"""Download a volume: CloudStack's "extract volume" copies it to secondary storage, from where
the user downloads it.

The copy runs on a KVM host of the pool (the volume is attached there read-only for the copy
and detached after), never through the management side, and reports its progress. A volume
whose VM is running is refused: a copy of a disk being written is not an image of anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cloudstack_storpool.agentapi.command_types import check_format
from cloudstack_storpool.driver import spclusters
from cloudstack_storpool.driver.identity import locate
from cloudstack_storpool.driver.revert import refuse_running
from cloudstack_storpool.driver.secondary import SecondaryLocation
from cloudstack_storpool.driver.snapshots import SecondaryCopy, on_any_host
from cloudstack_storpool.uuids import Uuid

if TYPE_CHECKING:
    from cloudstack_storpool.driver.context import DriverContext


def extract_volume(ctx: DriverContext, *, volume_uuid: Uuid, store: str, path: str,
                   format: str = "qcow2") -> SecondaryCopy:
    """Copy the volume to `path` on the secondary store `store` (qcow2, or raw)."""
    where = SecondaryLocation(store, path).check("secondary")
    check_format(format, "format")
    src = locate(ctx, volume_uuid)
    refuse_running(ctx.cloudstack.vm(src.cs.vm_id) if src.cs.vm_id else None, f"download of volume {volume_uuid}")
    agent, res = on_any_host(ctx, src.pool, lambda c: c.copy_volume_out(
        volume=src.name, store=where.store, path=where.path, format=format, progress=ctx.progress),
        spclusters.holding(ctx, src.pool, src.global_id))
    return SecondaryCopy(where.store, where.path, str(res.get("format", format)), int(res.get("virtual_size", 0)),
                         int(res.get("physical_size", 0)), agent)
