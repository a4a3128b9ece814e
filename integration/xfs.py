"""A reflink-capable XFS file system on a loop file: where the emulator's data plane lives when
snapshots and clones must copy no data (tests, the local stack, benchmarks)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def can_make_xfs() -> bool:
    """Root, mkfs.xfs and loop support: what `xfs_mount` needs."""
    return os.geteuid() == 0 and shutil.which("mkfs.xfs") is not None and os.path.exists("/dev/loop-control")


@contextmanager
def xfs_mount(base: Path, size: int = 8 << 30) -> Iterator[Path]:
    """Make `base/xfs.img` (sparse), format it with reflinks, mount it on `base/mnt`.

    `-o loop` sets autoclear, so unmounting also frees the loop device: nothing is left behind
    even when the caller fails half-way.
    """
    base.mkdir(parents=True, exist_ok=True)
    image, mnt = base / "xfs.img", base / "mnt"
    mnt.mkdir(exist_ok=True)
    with open(image, "wb") as f:
        f.truncate(size)
    mounted = False
    try:
        subprocess.run(["mkfs.xfs", "-q", "-f", "-m", "reflink=1", str(image)], check=True, capture_output=True)
        subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True, capture_output=True)
        mounted = True
        yield mnt
    finally:
        if mounted and subprocess.run(["umount", str(mnt)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)
        image.unlink(missing_ok=True)
