"""The emulator's data plane: one file per volume or snapshot, exposed per client as a device.

Real StorPool shares data between a snapshot and its children copy-on-write. Here every object
owns a full file, and the sharing is left to the filesystem: on XFS/btrfs a clone is a reflink
(`FICLONE`, no data copied, no space used until one side is written), elsewhere a sparse copy
(only the allocated ranges found with SEEK_DATA/SEEK_HOLE, and no all-zero chunks). Because each
file is self-contained, the model can drop a snapshot's file without rewriting its children.

Attaching an object to a client id exposes it under `<dev-root>/<client>/storpool-byid/<gid>`
and `<dev-root>/<client>/storpool/<name>` (symlinks), pointing at a loop device when loop
devices can be used, else at the file itself.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import struct
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from integration import leftovers

log = logging.getLogger(__name__)

FICLONE = 0x40049409
"""`_IOW(0x94, 9, int)`: clone all of one file's extents into another (reflink)."""

FS_IOC_FIEMAP = 0xC020660B
"""`_IOWR('f', 11, struct fiemap)`: a file's extent map (logical -> physical)."""
_FIEMAP_HEAD = struct.Struct("=QQIIII")
_FIEMAP_EXTENT = struct.Struct("=QQQQQIIII")
_FIEMAP_LAST = 0x1
_FIEMAP_BATCH = 256

_CHUNK = 4 * 1024 * 1024
_NO_REFLINK = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EPERM}


class DeviceOpenError(Exception):
    """A device (or file) that is to be detached is held open by some process."""

    def __init__(self, target: str, pids: list[int]) -> None:
        super().__init__(f"{target} is held open by pid(s) {', '.join(map(str, pids))}")
        self.target = target
        self.pids = pids


class DataPlaneError(Exception):
    """A system call or tool of the data plane failed (losetup, the filesystem)."""


def loop_supported() -> bool:
    """Loop devices need root, the loop-control node and `losetup`; without them use plain files."""
    return os.geteuid() == 0 and os.path.exists("/dev/loop-control") and shutil.which("losetup") is not None


def reflink_file(src: Path, dst: Path) -> bool:
    """Make `dst` a reflink clone of `src`; False (and `dst` left empty) when the fs cannot."""
    with open(src, "rb") as s, open(dst, "wb") as d:
        try:
            fcntl.ioctl(d.fileno(), FICLONE, s.fileno())
            return True
        except OSError as e:
            if e.errno in _NO_REFLINK:
                return False
            raise


def physical_extents(path: Path) -> list[tuple[int, int]] | None:
    """(physical start, length) of every extent of `path`, merged and sorted; None when the
    filesystem has no FIEMAP. Two reflinked files list the same physical ranges for what they share."""
    out: list[tuple[int, int]] = []
    start = 0
    with open(path, "rb") as f:
        while True:
            buf = bytearray(_FIEMAP_HEAD.size + _FIEMAP_BATCH * _FIEMAP_EXTENT.size)
            _FIEMAP_HEAD.pack_into(buf, 0, start, (1 << 64) - 1 - start, 1, 0, _FIEMAP_BATCH, 0)
            try:
                fcntl.ioctl(f.fileno(), FS_IOC_FIEMAP, buf)
            except OSError:
                return None
            mapped = _FIEMAP_HEAD.unpack_from(buf, 0)[3]
            last = False
            for i in range(mapped):
                logical, physical, length, _r1, _r2, flags, *_ = _FIEMAP_EXTENT.unpack_from(
                    buf, _FIEMAP_HEAD.size + i * _FIEMAP_EXTENT.size)
                out.append((physical, length))
                start = logical + length
                last = bool(flags & _FIEMAP_LAST)
            if mapped == 0 or last:
                break
    out.sort()
    merged: list[tuple[int, int]] = []
    for p, n in out:
        if merged and p <= merged[-1][0] + merged[-1][1]:
            mp, mn = merged[-1]
            merged[-1] = (mp, max(mn, p + n - mp))
        else:
            merged.append((p, n))
    return merged


def _overlap(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> int:
    """Bytes of physical ranges `a` that also lie in `b` (both merged and sorted)."""
    total, j = 0, 0
    for p, n in a:
        end = p + n
        while j < len(b) and b[j][0] + b[j][1] <= p:
            j += 1
        k = j
        while k < len(b) and b[k][0] < end:
            total += min(end, b[k][0] + b[k][1]) - max(p, b[k][0])
            k += 1
    return total


def sparse_copy(src: Path, dst: Path) -> int:
    """Copy only the data ranges of `src` (and skip zero chunks inside them); returns bytes written.

    Writing zeros would allocate space a thin volume never used, which is exactly what the
    emulated cluster must not do: a clone of a mostly empty 1 GiB volume must stay small.
    """
    written = 0
    sfd = os.open(src, os.O_RDONLY)
    try:
        dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            size = os.fstat(sfd).st_size
            off = 0
            while off < size:
                try:
                    data = os.lseek(sfd, off, os.SEEK_DATA)
                except OSError as e:
                    if e.errno == errno.ENXIO:
                        break
                    raise
                hole = os.lseek(sfd, data, os.SEEK_HOLE)
                pos = data
                while pos < hole:
                    chunk = os.pread(sfd, min(_CHUNK, hole - pos), pos)
                    if not chunk:
                        break
                    if chunk.count(0) != len(chunk):
                        os.pwrite(dfd, chunk, pos)
                        written += len(chunk)
                    pos += len(chunk)
                off = hole
            os.ftruncate(dfd, size)
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)
    return written


def pids_holding(target: str) -> list[int]:
    """Processes with an open file descriptor on `target` (a device node or a file path).

    This is how StorPool's "is open at" check is reproduced: a qemu process of a libvirt domain
    holding the device shows up here exactly like it does to the real client.
    """
    found: list[int] = []
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"{fd_dir}/{fd}") == target:
                    found.append(int(pid))
                    break
            except OSError:
                continue
    return found


def _mounted(device: str) -> bool:
    """A filesystem mounted from the device holds it as surely as an open fd does."""
    try:
        with open("/proc/self/mounts") as f:
            return any(line.split(" ", 1)[0] == device for line in f)
    except OSError:
        return False


@dataclass
class Exposure:
    """Where an attached object shows up on a client: the device (loop or file) and its links."""

    device: str
    is_loop: bool
    readonly: bool


class DataPlane:
    """Files under `<data_dir>/objects` and their per-client exposure under `dev_root`."""

    def __init__(self, data_dir: Path, dev_root: Path, use_loop: bool | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.dev_root = Path(dev_root)
        self.objects_dir = self.data_dir / "objects"
        self.objects_dir.mkdir(parents=True, exist_ok=True)
        self.dev_root.mkdir(parents=True, exist_ok=True)
        self.use_loop = loop_supported() if use_loop is None else use_loop
        self._reflink: bool | None = None
        self._lock = threading.Lock()
        self.loops: set[str] = set()
        """Every loop device this data plane set up and has not yet detached (for cleanup)."""
        if self.use_loop:
            self.release_stale_loops()

    # ---- files -------------------------------------------------------------------------------
    def path(self, gid: str) -> Path:
        return self.objects_dir / f"{gid}.img"

    def create(self, gid: str, size: int) -> None:
        fd = os.open(self.path(gid), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)

    def clone(self, src_gid: str, dst_gid: str, size: int | None = None) -> str:
        """Copy an object's content to a new object; returns "reflink" or "sparse"."""
        return self._clone_path(self.path(src_gid), self.path(dst_gid), size)

    def _clone_path(self, src: Path, dst: Path, size: int | None) -> str:
        how = "sparse"
        if self._reflink is not False and reflink_file(src, dst):
            self._reflink = True
            how = "reflink"
        else:
            self._reflink = False
            sparse_copy(src, dst)
        if size is not None and size != src.stat().st_size:
            os.truncate(dst, size)
        return how

    def copy_in(self, src: Path, gid: str) -> str:
        """A new object with the content of a file outside this data plane (another location's
        object); returns "reflink" or "sparse". Does not change what `clone` tries first."""
        dst = self.path(gid)
        if reflink_file(src, dst):
            return "reflink"
        sparse_copy(src, dst)
        return "sparse"

    def make_readonly(self, gid: str) -> None:
        """Snapshots are immutable: in plain-file mode (no loop device) the mode bits say so."""
        os.chmod(self.path(gid), 0o444)

    def replace_content(self, src_gid: str, dst_gid: str, size: int) -> str:
        """Revert: the destination's content becomes the source's (clone, then atomic rename)."""
        tmp = self.objects_dir / f"{dst_gid}.revert"
        how = self._clone_path(self.path(src_gid), tmp, size)
        os.replace(tmp, self.path(dst_gid))
        return how

    def resize(self, gid: str, size: int, devices: list[str]) -> None:
        os.truncate(self.path(gid), size)
        for dev in devices:
            if dev.startswith("/dev/loop"):
                self._losetup("--set-capacity", dev)

    def remove(self, gid: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(gid).unlink()

    def stored_bytes(self, gid: str, parent_gid: str | None = None) -> int:
        """Bytes written to the object itself, as StorPool's `storedSize` counts them: what it
        shares with its parent (reflinked extents, the data it reads through the parent) is the
        parent's. Without reflinks (a sparse copy) or FIEMAP the whole file counts."""
        try:
            allocated = self.path(gid).stat().st_blocks * 512
        except FileNotFoundError:
            return 0
        if parent_gid is None or not allocated:
            return allocated
        try:
            mine, parents = physical_extents(self.path(gid)), physical_extents(self.path(parent_gid))
        except FileNotFoundError:
            return allocated
        if mine is None or parents is None:
            return allocated
        return max(0, sum(n for _p, n in mine) - _overlap(mine, parents))

    @property
    def reflink(self) -> bool | None:
        """Whether clones were reflinks (None until the first clone was made)."""
        return self._reflink

    # ---- devices -----------------------------------------------------------------------------
    def _losetup(self, *args: str) -> str:
        res = subprocess.run(["losetup", *args], capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise DataPlaneError(f"losetup {' '.join(args)}: {res.stderr.strip()}")
        return res.stdout.strip()

    def byid_link(self, client: int, gid: str) -> Path:
        return self.dev_root / str(client) / "storpool-byid" / gid

    def name_link(self, client: int, name: str) -> Path:
        return self.dev_root / str(client) / "storpool" / name

    @staticmethod
    def _link(link: Path, target: str) -> None:
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(f".{link.name}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(target, tmp)
        os.replace(tmp, link)

    def attach(self, client: int, gid: str, name: str | None, readonly: bool) -> Exposure:
        """Expose an object on a client; a loop device when possible, else the file itself."""
        backing = str(self.path(gid))
        if self.use_loop:
            args = ["--find", "--show"] + (["--read-only"] if readonly else []) + [backing]
            dev = self._losetup(*args)
            with self._lock:
                self.loops.add(dev)
            exp = Exposure(dev, True, readonly)
        else:
            exp = Exposure(backing, False, readonly)
        self.link(client, gid, name, exp.device)
        return exp

    def link(self, client: int, gid: str, name: str | None, device: str) -> None:
        self._link(self.byid_link(client, gid), device)
        if name is not None:
            self._link(self.name_link(client, name), device)

    def unlink_name(self, client: int, name: str | None) -> None:
        if name is not None:
            with contextlib.suppress(FileNotFoundError):
                self.name_link(client, name).unlink()

    def holders(self, exp: Exposure) -> list[int]:
        pids = pids_holding(exp.device)
        if exp.is_loop and not pids and _mounted(exp.device):
            pids = [0]
        return pids

    def detach(self, client: int, gid: str, name: str | None, exp: Exposure, force: bool) -> None:
        """Remove the exposure; refuses while open unless forced (then the loop goes lazily)."""
        if not force:
            pids = self.holders(exp)
            if pids:
                raise DeviceOpenError(exp.device, pids)
        with contextlib.suppress(FileNotFoundError):
            self.byid_link(client, gid).unlink()
        self.unlink_name(client, name)
        if exp.is_loop:
            self.release_loop(exp.device)

    def release_loop(self, dev: str) -> None:
        """`losetup -d` on a device still open only marks it autoclear: gone on last close."""
        try:
            self._losetup("--detach", dev)
        except DataPlaneError as e:
            log.warning("detaching %s: %s", dev, e)
        with self._lock:
            self.loops.discard(dev)

    def release_stale_loops(self) -> list[str]:
        """Loop devices over our files left by an emulator that was killed, not stopped.

        Without this a crash-restart would expose each attachment twice (the orphan and the new
        device), and the orphans would outlive every test.
        """
        stale = leftovers.loops_under(self.objects_dir)
        for name in stale:
            self.release_loop(name)
        return stale

    def close(self) -> None:
        """Release every loop device this data plane created (the emulator is stopping)."""
        with self._lock:
            loops = sorted(self.loops)
        for dev in loops:
            self.release_loop(dev)
