"""Tell a running VM that one of its StorPool disks grew (libvirt block resize).

StorPool grows the device on every host at once, but qemu caches the disk's size; without
`virDomainBlockResize` the guest would only see the new size after a restart. The disk is
found by its source device rather than by a target name from the caller, because the
driver knows the volume, not how libvirt named the disk.
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import TypeVar

from cloudstack_storpool.errors import NotFound, ProjectError
from cloudstack_storpool.uuids import is_uuid

log = logging.getLogger(__name__)

E = TypeVar("E", bound=ProjectError)


class ResizeError(ProjectError):
    code = "resize"


def not_applied(exc: E) -> E:
    """Mark an error as confirmed to have left the guest's disk as it was (`applied: false` in
    the agent's error answer): what the driver needs before it shrinks StorPool back."""
    exc.applied = False  # type: ignore[attr-defined]
    return exc


@dataclass(frozen=True)
class DiskMatch:
    target: str
    source: str


def _same_device(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return os.path.realpath(a) == os.path.realpath(b) or os.path.samefile(a, b)
    except OSError:
        return False


def find_disk(domain_xml: str, candidates: list[str]) -> DiskMatch | None:
    """The `<disk>` whose source is one of `candidates` (by path or by the device it resolves to)."""
    root = ET.fromstring(domain_xml)  # noqa: S314 - XML comes from our own libvirtd
    for disk in root.iter("disk"):
        if disk.get("device", "disk") not in ("disk", "lun"):
            continue
        src = disk.find("source")
        tgt = disk.find("target")
        if src is None or tgt is None:
            continue
        path = src.get("dev") or src.get("file")
        if not path:
            continue
        if any(_same_device(path, c) for c in candidates):
            dev = tgt.get("dev")
            if dev:
                return DiskMatch(target=dev, source=path)
    return None


@dataclass(frozen=True)
class ResizeResult:
    notified: bool
    domain: str | None = None
    disk: str | None = None
    capacity: int | None = None
    reason: str = ""


def notify_resize(uri: str, vm: str, devices: list[str], size: int) -> ResizeResult:
    """Block-resize the disk backed by one of `devices` in running domain `vm` to `size` bytes.

    A VM that is not defined or not running here needs no notification (it reads the size on
    its next start), which is reported, not raised.
    """
    import libvirt

    conn = libvirt.open(uri)
    try:
        try:
            dom = conn.lookupByUUIDString(vm) if is_uuid(vm) else conn.lookupByName(vm)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return ResizeResult(notified=False, reason=f"domain {vm} is not on this host")
            raise ResizeError(f"libvirt lookup of {vm}: {exc.get_error_message()}") from exc
        if not dom.isActive():
            return ResizeResult(notified=False, domain=dom.name(), reason="domain is not running")
        match = find_disk(dom.XMLDesc(0), devices)
        if match is None:
            raise NotFound(f"domain {dom.name()} has no disk backed by {', '.join(devices)}")
        try:
            dom.blockResize(match.target, size, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
        except libvirt.libvirtError as exc:
            raise ResizeError(f"block resize of {dom.name()}/{match.target}: {exc.get_error_message()}") from exc
        # Applied from here on: a failure to read the new capacity back is not a failed resize.
        try:
            capacity: int | None = int(dom.blockInfo(match.target, 0)[0])
        except libvirt.libvirtError as exc:
            capacity = None
            log.warning("%s/%s was resized; reading its capacity back failed: %s", dom.name(), match.target,
                        exc.get_error_message())
        return ResizeResult(notified=True, domain=dom.name(), disk=match.target, capacity=capacity)
    finally:
        conn.close()


def libvirt_version(uri: str) -> str:
    import libvirt

    conn = libvirt.open(uri)
    try:
        v = int(conn.getLibVersion())
        return f"{v // 1000000}.{v // 1000 % 1000}.{v % 1000}"
    finally:
        conn.close()
