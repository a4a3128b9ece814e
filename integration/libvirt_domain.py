"""A real libvirt domain with a StorPool-emulator device as its disk, for tests and the demo.

No guest OS is needed: the domain is created paused, which is enough for QEMU to open the block
device and for libvirt's block resize to reach it. KVM is used when the guest user may open
/dev/kvm (host-setup.sh arranges that), else TCG.
"""

from __future__ import annotations

import grp
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

URI = "qemu:///system"


def open_libvirt(uri: str = URI) -> Any:
    import libvirt

    return libvirt.open(uri)


def guest_may_use_kvm() -> bool:
    try:
        st = os.stat("/dev/kvm")
        kvm_gid = grp.getgrnam("kvm").gr_gid
    except (OSError, KeyError):
        return False
    rw_other = stat.S_IROTH | stat.S_IWOTH
    rw_group = stat.S_IRGRP | stat.S_IWGRP
    return st.st_mode & rw_other == rw_other or (st.st_gid == kvm_gid and st.st_mode & rw_group == rw_group)


def domain_xml(name: str, device: str, kind: str, target: str = "vdb") -> str:
    return f"""
<domain type='{kind}'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw' cache='none' io='native' discard='unmap'/>
      <source dev='{device}'/>
      <target dev='{target}' bus='virtio'/>
    </disk>
    <memballoon model='none'/>
  </devices>
</domain>"""


def start_domain(conn: Any, name: str, device: str, target: str = "vdb") -> Any:
    """A transient paused domain. `device` should be the real block device (QEMU runs as
    libvirt-qemu and may not be able to walk a private directory holding a symlink)."""
    import libvirt

    kinds = ["kvm", "qemu"] if guest_may_use_kvm() else ["qemu"]
    for kind in kinds:
        try:
            return conn.createXML(domain_xml(name, os.path.realpath(device), kind, target), libvirt.VIR_DOMAIN_START_PAUSED)
        except libvirt.libvirtError as exc:
            if kind == kinds[-1] or "kvm" not in str(exc).lower():
                raise
    raise AssertionError("unreachable")


@contextmanager
def running_domain(name: str, device: str, target: str = "vdb", uri: str = URI) -> Iterator[Any]:
    """A domain for the duration of the block; destroyed (and the connection closed) after."""
    conn = open_libvirt(uri)
    try:
        dom = start_domain(conn, name, device, target)
        try:
            yield dom
        finally:
            if dom.isActive():
                dom.destroy()
    finally:
        conn.close()
