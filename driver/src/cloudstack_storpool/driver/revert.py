"""Reverting volumes to StorPool snapshots: one volume (a volume snapshot) or every disk of a
VM (a VM snapshot), always under a stopped VM, keeping each volume's iops limit and tags.

A revert rewrites the disk under the VM's feet, so a running VM is refused; once the VM is
known to be stopped, whatever is still attached is a stale attachment of the host that ran it
last and is force-detached.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from cloudstack_storpool.errors import Conflict

if TYPE_CHECKING:
    from cloudstack_storpool.cloudstack.records import VirtualMachine
    from cloudstack_storpool.driver.identity import LocatedVolume
    from cloudstack_storpool.spconn import StorPoolConn
    from cloudstack_storpool.sprecords import SpVolume

STOPPED_STATES = ("Stopped", "Destroyed", "Expunging")


def refuse_running(vm: VirtualMachine | None, what: str) -> None:
    """Conflict unless the VM (if any) is stopped."""
    if vm is not None and vm.state not in STOPPED_STATES:
        raise Conflict(f"{what}: VM {vm.name or vm.id} is {vm.state}; stop it first")


def restore_tags(current: Mapping[str, str] | None) -> dict[str, str]:
    """The tags to write back after a revert: everything the volume carried (cvm, disk,
    vc-policy, qc, identity). StorPool keeps tags on revert today; writing them back costs
    nothing in the same VolumeUpdate that re-applies iops and guards against the day it
    does not."""
    return dict(current or {})


def revert_volume(conn: StorPoolConn, src: LocatedVolume, snapshot: str, summary: SpVolume, *,
                  detach: bool = True) -> tuple[int, dict[str, str]]:
    """Detach (unless the caller detached already), VolumeRevert, then re-apply iops
    (CloudStack's max IOPS when it has one, else the limit the volume had) and tags.
    SpNotFound when the snapshot is not there (callers may look for it elsewhere)."""
    iops = src.cs.max_iops if src.cs.max_iops is not None else summary.iops
    kept = restore_tags(summary.tags)
    if detach:
        conn.detach(summary, force=True)
    conn.volume_revert(src.name, snapshot)
    conn.volume_update(src.name, iops=iops, tags=kept or None)
    return iops, kept
