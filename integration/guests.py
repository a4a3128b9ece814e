"""The hypervisor's part of the local stack's VMs: each running VM is a real guest under libvirt.

CloudStack's KVM agent starts a domain whose disks are the host's StorPool devices; the guest
writes its own files there, so what a test writes over SSH before a snapshot is on StorPool and
comes back after a revert. Here one libvirtd plays every simulated host: a VM's disks are the
devices the StorPool emulator exposes for the client id of the host the VM runs on.

Network: QEMU's user-mode stack (no bridge, no root inside the guest's network), with the guest's
SSH port forwarded to a free loopback port, and a small forwarder on the VM's own loopback
address (the IP the simulator reports in `nic[]`), port 22, as a test expects to reach a guest.
QEMU runs as libvirt's unprivileged user, which may not bind port 22 itself.

The guest runs under TCG unless `CSSP_GUEST_KVM=1`: nested KVM on the machines this was built on
fails to run a booting guest (QEMU asserts on an MSR), while a paused domain is fine.

An encrypted disk (a LUKS header on StorPool, the passphrase CloudStack generated) is opened as
CloudStack's KVM agent opens it (LibvirtComputingResource): a libvirt secret holding the
passphrase and `<encryption format='luks'>` on the disk, so QEMU's LUKS driver decrypts and the
guest sees the plaintext. The secret is ephemeral and private (libvirt keeps it in memory and
never hands the value back) and is removed when the guest stops or the disk is unplugged.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from integration.guest_image import GuestImage
from integration.libvirt_domain import URI, open_libvirt

log = logging.getLogger(__name__)

MEMORY_MIB = 160
DOMAIN_PREFIX = "cssp-guest-"
# virtio disks from vda on, at PCI slots 0x04.. (the NIC sits at 0x1f, out of libvirt's way).
TARGETS = [f"vd{chr(ord('a') + i)}" for i in range(16)]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def encryption_xml(secret_uuid: str | None) -> str:
    """A disk's `<encryption>` element as CloudStack's DiskDef writes it (empty for a plain disk)."""
    if secret_uuid is None:
        return ""
    return f"<encryption format='luks'><secret type='passphrase' uuid='{escape(secret_uuid)}'/></encryption>"


def is_file_disk(source: str) -> bool:
    """A volume on a pool of another kind than StorPool (an NFS or RBD stand-in) is a file; a
    StorPool volume is a block device."""
    return not source.startswith("/dev/")


def file_format(path: str) -> str:
    """qcow2 or raw, by the file's magic (as QEMU probes an image)."""
    with open(path, "rb") as f:
        return "qcow2" if f.read(4) == b"QFI\xfb" else "raw"


def disk_xml(source: str, target: str, secret_uuid: str | None = None) -> str:
    """One virtio disk `target`: a StorPool device (`<disk type='block'>`) or a file-backed volume
    (`<disk type='file'>`, qcow2 or raw), by what `source` is; encrypted when `secret_uuid` is
    given."""
    if not stat.S_ISBLK(os.stat(source).st_mode):
        return (f"<disk type='file' device='disk'><driver name='qemu' type='{file_format(source)}' discard='unmap'/>"
                f"<source file='{escape(source)}'/><target dev='{target}' bus='virtio'/>"
                f"{encryption_xml(secret_uuid)}</disk>")
    return (f"<disk type='block' device='disk'>"
            f"<driver name='qemu' type='raw' cache='none' io='native' discard='unmap'/>"
            f"<source dev='{escape(os.path.realpath(source))}'/><target dev='{target}' bus='virtio'/>"
            f"{encryption_xml(secret_uuid)}</disk>")


def domain_xml(name: str, image: GuestImage, disks: list[tuple[str, str, str | None]], ssh_port: int, kind: str,
               console: Path | None) -> str:
    """A domain booting the guest's kernel with its first disk as root; `disks` are (device or
    file, target, secret uuid of an encrypted disk or None) triples, the root first. ACPI is on: on
    the `pc` machine a disk hot-plugged into the running guest (AttachCommand) arrives through
    ACPI PCI hot-plug, which QEMU refuses without it."""
    disks_xml = "\n    ".join(disk_xml(dev, target, secret) for dev, target, secret in disks)
    serial = (f"<serial type='file'><source path='{escape(str(console))}'/><target port='0'/></serial>"
              if console else "")
    return f"""<domain type='{kind}' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{escape(name)}</name>
  <memory unit='MiB'>{MEMORY_MIB}</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(str(image.kernel))}</kernel>
    <initrd>{escape(str(image.initrd))}</initrd>
    <cmdline>console=ttyS0 panic=-1</cmdline>
  </os>
  <features><acpi/><apic/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    {disks_xml}
    {serial}
    <memballoon model='none'/>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-netdev'/><qemu:arg value='user,id=net0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22'/>
    <qemu:arg value='-device'/><qemu:arg value='virtio-net-pci,netdev=net0,addr=0x1f'/>
  </qemu:commandline>
</domain>"""


class Forwarder:
    """TCP from (ip, port) to 127.0.0.1:target, a thread per direction of each connection."""

    def __init__(self, ip: str, port: int, target: int) -> None:
        self.target = target
        self.sock = socket.create_server((ip, port), reuse_port=False)
        self.sock.settimeout(0.5)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._accept, name=f"guest-ssh-{ip}", daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()  # the guest is not up yet: the caller retries, as against a booting VM
                continue
            upstream.settimeout(None)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()
        self.thread.join(timeout=2)


@dataclass
class Guest:
    name: str
    ip: str
    ssh_port: int
    forwarder: Forwarder
    disks: dict[str, str] = field(default_factory=dict)  # target -> device or file
    paths: dict[str, str] = field(default_factory=dict)  # target -> the path the host was given
    secrets: dict[str, str] = field(default_factory=dict)  # target -> libvirt secret uuid (encrypted disks)


class Guests:
    """Domains for VMs, keyed by VM id. `device_of(client_id, path)` turns the path CloudStack
    stored for a volume into that host's device for it."""

    def __init__(self, image: GuestImage, device_of: Callable[[int, str], str], *, uri: str = URI,
                 console_dir: Path | None = None) -> None:
        self.image = image
        self.device_of = device_of
        self.uri = uri
        self.console_dir = console_dir
        self.kind = "kvm" if os.environ.get("CSSP_GUEST_KVM") == "1" else "qemu"
        self.lock = threading.Lock()
        self.guests: dict[str, Guest] = {}
        self._conn: Any = None

    def source(self, client_id: int, path: str) -> str:
        """What the domain opens for a disk: the file of a file-backed volume, else the host's
        StorPool device for the path."""
        return path if is_file_disk(path) else self.device_of(client_id, path)

    def _libvirt(self) -> Any:
        if self._conn is None:
            self._conn = open_libvirt(self.uri)
        return self._conn

    def _secret(self, vm_id: str, target: str, passphrase: str | None) -> str | None:
        """A libvirt secret holding an encrypted disk's passphrase (CloudStack's
        createLibvirtVolumeSecret); None for a plain disk."""
        if passphrase is None:
            return None
        secret_uuid = str(uuid.uuid4())
        secret = self._libvirt().secretDefineXML(
            f"<secret ephemeral='yes' private='yes'><uuid>{secret_uuid}</uuid>"
            f"<description>{escape(DOMAIN_PREFIX + vm_id)} {target}</description></secret>", 0)
        try:
            secret.setValue(passphrase.encode(), 0)
        except BaseException:
            secret.undefine()
            raise
        return secret_uuid

    def _drop_secrets(self, secret_uuids: list[str]) -> None:
        import libvirt

        for secret_uuid in secret_uuids:
            try:
                self._libvirt().secretLookupByUUIDString(secret_uuid).undefine()
            except libvirt.libvirtError as exc:
                log.warning("secret %s: %s", secret_uuid, exc.get_error_message())

    def start(self, vm_id: str, ip: str, client_id: int, paths: list[str],
              passphrases: Mapping[str, str] | None = None) -> None:
        """Boot the VM's guest; `paths` are its volumes' paths, the root first; `passphrases`
        those of its encrypted volumes, by path."""
        keys = passphrases or {}
        with self.lock:
            if vm_id in self.guests:
                return
            secrets: dict[str, str] = {}
            try:
                disks: list[tuple[str, str, str | None]] = []
                for i, p in enumerate(paths):
                    secret = self._secret(vm_id, TARGETS[i], keys.get(p))
                    if secret is not None:
                        secrets[TARGETS[i]] = secret
                    disks.append((self.source(client_id, p), TARGETS[i], secret))
                port = free_port()
                name = DOMAIN_PREFIX + vm_id
                console = self.console_dir / f"{vm_id}.log" if self.console_dir else None
                domain = self._libvirt().createXML(domain_xml(name, self.image, disks, port, self.kind, console), 0)
                try:
                    forwarder = Forwarder(ip, 22, port)
                except BaseException:
                    domain.destroy()
                    raise
            except BaseException:
                self._drop_secrets(list(secrets.values()))
                raise
            guest = Guest(name, ip, port, forwarder, {t: d for d, t, _ in disks},
                          {TARGETS[i]: p for i, p in enumerate(paths)}, secrets)
            self.guests[vm_id] = guest
            log.info("guest %s booting on %s (ssh %s:22)", name, disks[0][0] if disks else "-", ip)

    def stop(self, vm_id: str) -> None:
        """Power the guest off (a stop, a destroy, or before a revert)."""
        import libvirt

        with self.lock:
            guest = self.guests.pop(vm_id, None)
        if guest is None:
            return
        guest.forwarder.close()
        try:
            self._libvirt().lookupByName(guest.name).destroy()
        except libvirt.libvirtError as exc:
            log.warning("guest %s: %s", guest.name, exc)
        self._drop_secrets(list(guest.secrets.values()))

    def attach(self, vm_id: str, client_id: int, path: str, passphrase: str | None = None) -> None:
        """Hot-plug a data disk at the first free target (KVM's AttachCommand); `passphrase`
        for an encrypted one."""
        with self.lock:
            guest = self.guests.get(vm_id)
            if guest is None:
                return
            target = next(t for t in TARGETS if t not in guest.disks)
            device = self.source(client_id, path)
            secret = self._secret(vm_id, target, passphrase)
            try:
                self._libvirt().lookupByName(guest.name).attachDevice(disk_xml(device, target, secret))
            except BaseException:
                self._drop_secrets([secret] if secret else [])
                raise
            guest.disks[target] = device
            guest.paths[target] = path
            if secret is not None:
                guest.secrets[target] = secret

    def detach(self, vm_id: str, client_id: int, path: str) -> None:
        """Unplug a data disk (KVM's DettachCommand)."""
        with self.lock:
            guest = self.guests.get(vm_id)
            if guest is None:
                return
            device = self.source(client_id, path)
            target = next((t for t, d in guest.disks.items() if d == device), None)
            if target is None:
                return
            self._libvirt().lookupByName(guest.name).detachDevice(disk_xml(device, target))
            del guest.disks[target]
            guest.paths.pop(target, None)
            secret = guest.secrets.pop(target, None)
            if secret is not None:
                self._drop_secrets([secret])

    def block_copy(self, vm_id: str, client_id: int, copies: dict[str, str], timeout: float = 600.0) -> None:
        """Copy each disk (its path on the source -> the new path) onto the destination host's
        device while the guest runs, as CloudStack's KVM agent has libvirt do it: a block copy
        job (virDomainBlockCopy onto the existing device), waited for until the copy has caught
        up and mirrors every new write, then the pivot (virDomainBlockJobAbort with PIVOT): the
        guest's disk is the new device from then on, with every write made during the copy."""
        import libvirt

        with self.lock:
            guest = self.guests.get(vm_id)
            if guest is None:
                return
            dom = self._libvirt().lookupByName(guest.name)
            targets = {old: next(t for t, p in guest.paths.items() if p == old) for old in copies}
        for old, new in copies.items():  # outside the lock: other guests go on meanwhile
            target, device = targets[old], self.source(client_id, new)
            dest = (f"<disk type='block'><driver type='raw'/>"
                    f"<source dev='{escape(os.path.realpath(device))}'/></disk>")
            dom.blockCopy(target, dest, None, libvirt.VIR_DOMAIN_BLOCK_COPY_REUSE_EXT)
            self._pivot(dom, target, timeout)
            with self.lock:
                guest.disks[target], guest.paths[target] = device, new
            log.info("guest %s: %s copied onto %s and switched to it", guest.name, target, device)

    @staticmethod
    def _pivot(dom: Any, target: str, timeout: float) -> None:
        """Pivot once the job is ready (the copy caught up); a job that ends otherwise, or
        never gets there, is aborted and reported."""
        import libvirt

        deadline = time.monotonic() + timeout
        while True:
            info = dom.blockJobInfo(target, 0)
            if not info:
                raise RuntimeError(f"block copy of {target} ended before it could switch over")
            if info["end"] and info["cur"] == info["end"]:
                try:
                    dom.blockJobAbort(target, libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)
                    return
                except libvirt.libvirtError as exc:  # not ready yet: the mirror phase starts shortly
                    log.debug("pivot of %s: %s", target, exc)
            if time.monotonic() > deadline:
                dom.blockJobAbort(target, 0)
                raise TimeoutError(f"block copy of {target} not ready in {timeout:.0f} s")
            time.sleep(0.2)

    def close(self) -> None:
        for vm_id in list(self.guests):
            self.stop(vm_id)
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def wait_for_ssh(ip: str, timeout: float = 120.0) -> None:
    """Until the guest's SSH server greets (a booting guest under TCG takes a few seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((ip, 22), timeout=3) as s:
                s.settimeout(5)
                if s.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"guest at {ip}: no SSH greeting in {timeout:.0f} s")
        time.sleep(0.5)


class StackGuests:
    """The simulator's hypervisor hooks played with real guests: a host's devices are the ones
    the StorPool emulator exposes for that host's client id (`SP_OURID`), a VM's address is the
    one the simulator reports in its `nic[]`."""

    def __init__(self, model: Any, guests: Guests) -> None:
        self.model = model
        self.guests = guests
        self.image = guests.image

    def _client(self, host_id: str) -> int:
        return int(self.model.hosts[host_id].details["SP_OURID"])

    def vm_started(self, vm_id: str, host_id: str, paths: list[str],
                   passphrases: Mapping[str, str] | None = None) -> None:
        if paths:
            self.guests.start(vm_id, self.model.vms[vm_id].ip_address, self._client(host_id), paths, passphrases)

    def vm_stopped(self, vm_id: str) -> None:
        self.guests.stop(vm_id)

    def vm_migrated(self, vm_id: str, host_id: str, paths: list[str],
                    passphrases: Mapping[str, str] | None = None) -> None:
        """One libvirtd plays every host, so the guest cannot move between two of them: it
        restarts on the destination's devices (what a test wrote and synced is on its disks)."""
        self.guests.stop(vm_id)
        self.vm_started(vm_id, host_id, paths, passphrases)

    def vm_migrated_with_storage(self, vm_id: str, host_id: str, copies: dict[str, str]) -> None:
        """The moving disks are block-copied while the guest runs. Its other StorPool disks are
        the same volumes on the destination host; one libvirtd cannot hand a running guest's
        block device over to another host's, so when it has such disks the guest restarts on
        the destination's devices after the copies (as `vm_migrated` does)."""
        client = self._client(host_id)
        self.guests.block_copy(vm_id, client, copies)
        guest = self.guests.guests.get(vm_id)
        if guest is None:
            return
        paths = [guest.paths[t] for t in sorted(guest.paths, key=TARGETS.index)]
        if any(guest.disks[t] != self.guests.source(client, p) for t, p in guest.paths.items()):
            self.vm_migrated(vm_id, host_id, paths)

    def disk_attached(self, vm_id: str, host_id: str, path: str, passphrase: str | None = None) -> None:
        self.guests.attach(vm_id, self._client(host_id), path, passphrase)

    def disk_detached(self, vm_id: str, host_id: str, path: str) -> None:
        self.guests.detach(vm_id, self._client(host_id), path)
