"""A real minimal guest for the local stack's VMs, built from Debian's own packages.

CloudStack's own tests log into their VMs over SSH, write files and read them back after
snapshots, reverts and migrations, so a VM must be a running guest whose root filesystem lives on
the VM's StorPool root disk. The guest is Debian's kernel with a busybox userland and dropbear
for SSH: small enough to build in seconds from `apt-get download`, with no network needed inside
the guest beyond QEMU's user-mode stack.

Boot: the kernel and a small initramfs (busybox and the virtio and ext4 modules of that kernel)
are given to QEMU directly; the initramfs mounts the first virtio disk and switches to it. The
root filesystem image (ext4, made with `mke2fs -d`, no mount needed) is the template's content,
so every root volume made from the template, its snapshots and its clones boot the same way.

Everything is built once into a cache folder keyed by the kernel's version, readable by the
user libvirt runs QEMU as.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("CSSP_GUEST_CACHE", "/var/cache/cloudstack-storpool-guest"))
PACKAGES = ("busybox-static", "dropbear-bin", "libtomcrypt1", "libtommath1")
# The modules the initramfs loads, in order; their dependencies are read from each module.
BOOT_MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "crc32c_generic", "ext4")
ROOT_PASSWORD = "password"
ROOTFS_MIB = 48  # under the smallest seeded template (64 MiB)


@dataclass(frozen=True)
class GuestImage:
    kernel: Path
    initrd: Path
    rootfs: Path  # a raw ext4 image: the template's content
    kernel_version: str


def _run(*cmd: str, cwd: Path | None = None) -> str:
    return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True).stdout


def _kernel_package() -> str:
    """The versioned image package `linux-image-amd64` points at today."""
    out = _run("apt-cache", "depends", "linux-image-amd64")
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Depends: linux-image-"):
            return line.split()[1]
    raise RuntimeError("guest image: apt-cache names no kernel behind linux-image-amd64")


def _download(names: list[str], into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    try:
        _run("apt-get", "download", *names, cwd=into)
    except subprocess.CalledProcessError:
        _run("apt-get", "update", "-qq")
        _run("apt-get", "download", *names, cwd=into)


def _modinfo(ko: Path, key: str) -> list[str]:
    """A field of a module's .modinfo section (NUL-separated key=value strings)."""
    prefix = key.encode() + b"="
    values: list[str] = []
    for chunk in ko.read_bytes().split(b"\0"):
        if chunk.startswith(prefix):
            values.extend(v for v in chunk[len(prefix):].decode().split(",") if v)
    return values


def _module_order(moddir: Path, wanted: tuple[str, ...]) -> list[Path]:
    """The modules to load, dependencies first (what modprobe would do)."""
    by_name = {p.name.removesuffix(".ko").replace("-", "_"): p for p in moddir.rglob("*.ko")}
    order: list[Path] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        name = name.replace("-", "_")
        if name in seen:
            return
        seen.add(name)
        ko = by_name.get(name)
        if ko is None:  # built into the kernel
            return
        for dep in _modinfo(ko, "depends"):
            visit(dep)
        order.append(ko)

    for name in wanted:
        visit(name)
    return order


def _cpio_newc(root: Path) -> bytes:
    """An initramfs archive (cpio "newc") of a folder; no cpio binary needed."""
    out = io.BytesIO()
    ino = 1

    def entry(name: str, mode: int, data: bytes) -> None:
        nonlocal ino
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
        head = b"070701" + b"".join(b"%08X" % f for f in fields)
        out.write(head + name.encode() + b"\0")
        out.write(b"\0" * ((4 - out.tell() % 4) % 4))
        out.write(data)
        out.write(b"\0" * ((4 - out.tell() % 4) % 4))
        ino += 1

    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            entry(rel, stat.S_IFLNK | 0o777, os.readlink(path).encode())
        elif path.is_dir():
            entry(rel, stat.S_IFDIR | 0o755, b"")
        else:
            entry(rel, stat.S_IFREG | (st.st_mode & 0o777), path.read_bytes())
    entry("TRAILER!!!", 0, b"")
    return out.getvalue()


INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in /lib/modules/*.ko; do insmod "$m" 2>/dev/null; done
for i in $(seq 1 50); do [ -b /dev/vda ] && break; sleep 0.1; done
mount -t ext4 /dev/vda /newroot || { echo "guest: no root disk"; exec sh; }
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
"""

INITTAB = """::sysinit:/etc/rc
::respawn:/usr/sbin/dropbear -F -R -E -p 22
ttyS0::respawn:/bin/sh
::ctrlaltdel:/bin/reboot
::shutdown:/bin/sync
"""

RC = """#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
mount -o remount,rw /
hostname guest
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
mkdir -p /etc/dropbear /tmp
"""


def _userland(root: Path, debs: Path, password_hash: str) -> None:
    """The root filesystem: busybox, dropbear and its libraries, an init and an SSH login."""
    for deb in debs.glob("*.deb"):
        if not deb.name.startswith("linux-image"):
            _run("dpkg-deb", "-x", str(deb), str(root))
    busybox = root / "bin" / "busybox"
    for folder in ("sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "root", "etc/dropbear", "lib64"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for applet in _run(str(busybox), "--list").split():
        link = root / "bin" / applet
        if not link.exists() and applet != "busybox":
            link.symlink_to("busybox")
    (root / "sbin" / "init").unlink(missing_ok=True)
    (root / "sbin" / "init").symlink_to("/bin/busybox")
    _copy_libraries(root, root / "usr" / "sbin" / "dropbear")
    etc = root / "etc"
    (etc / "inittab").write_text(INITTAB)
    (etc / "rc").write_text(RC)
    (etc / "rc").chmod(0o755)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\n")
    (etc / "shadow").write_text(f"root:{password_hash}:19000:0:99999:7:::\n")
    (etc / "shadow").chmod(0o600)
    (etc / "shells").write_text("/bin/sh\n")


def _copy_libraries(root: Path, binary: Path) -> None:
    """The shared libraries a binary needs that its packages did not bring, from this machine
    (the same Debian release as the packages), at the same paths."""
    extracted = root / "usr" / "lib" / "x86_64-linux-gnu"
    env = {**os.environ, "LD_LIBRARY_PATH": str(extracted)}
    out = subprocess.run(["ldd", str(binary)], check=True, capture_output=True, text=True, env=env).stdout
    for line in out.splitlines():
        parts = line.split()
        path = parts[2] if len(parts) >= 3 and parts[1] == "=>" else parts[0] if parts and parts[0].startswith("/") else ""
        if path == "not":
            raise RuntimeError(f"guest image: {binary.name} needs a library this machine lacks: {line.strip()}")
        if not path.startswith("/") or path.startswith(str(root)):
            continue
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(path), target)


def _password_hash(password: str) -> str:
    return _run("openssl", "passwd", "-6", password).strip()


def _recipe() -> str:
    """A short digest of how the image is made, so a changed recipe builds anew."""
    parts = (INIT, INITTAB, RC, str(ROOTFS_MIB), ROOT_PASSWORD, *PACKAGES, *BOOT_MODULES)
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:10]


def build(cache: Path = CACHE) -> GuestImage:
    """The guest's kernel, initramfs and root filesystem, built once per kernel version."""
    kernel_pkg = _kernel_package()
    version = kernel_pkg.removeprefix("linux-image-")
    out = cache / f"{version}-{_recipe()}"
    image = GuestImage(out / "vmlinuz", out / "initrd.gz", out / "rootfs.raw", version)
    if image.rootfs.exists():
        return image
    cache.mkdir(parents=True, exist_ok=True)
    cache.chmod(0o755)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        work = Path(tmp)
        debs = work / "debs"
        _download([kernel_pkg, *PACKAGES], debs)
        kdir = work / "kernel"
        _run("dpkg-deb", "-x", str(next(debs.glob("linux-image-*.deb"))), str(kdir))
        stage = work / "out"
        stage.mkdir()
        shutil.copy2(kdir / "boot" / f"vmlinuz-{version}", stage / "vmlinuz")
        # initramfs: busybox, the boot modules in load order, /init
        initramfs = work / "initramfs"
        for folder in ("bin", "proc", "sys", "dev", "newroot", "lib/modules"):
            (initramfs / folder).mkdir(parents=True)
        _run("dpkg-deb", "-x", str(next(debs.glob("busybox-static_*.deb"))), str(work / "bb"))
        shutil.copy2(work / "bb" / "bin" / "busybox", initramfs / "bin" / "busybox")
        for index, ko in enumerate(_module_order(kdir / "lib" / "modules" / version, BOOT_MODULES)):
            shutil.copy2(ko, initramfs / "lib" / "modules" / f"{index:02d}-{ko.name}")
        (initramfs / "init").write_text(INIT)
        (initramfs / "init").chmod(0o755)
        (stage / "initrd.gz").write_bytes(gzip.compress(_cpio_newc(initramfs), compresslevel=6))
        # root filesystem
        rootdir = work / "rootfs"
        rootdir.mkdir()
        _userland(rootdir, debs, _password_hash(ROOT_PASSWORD))
        raw = stage / "rootfs.raw"
        _run("mke2fs", "-q", "-t", "ext4", "-L", "guest-root", "-d", str(rootdir), str(raw), f"{ROOTFS_MIB}M")
        for path in stage.iterdir():
            path.chmod(0o644)
        stage.chmod(0o755)
        stage.rename(out)
    return image
