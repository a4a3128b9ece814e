"""What a killed local stack leaves on the machine, found by the directory it ran in.

The stack's process holds an XFS loop mount and, on it, one loop device per attached object.
Killed (kill -9, an OOM, a closed terminal), it runs no cleanup: the mount stays, the loop
devices stay, and a new `up` in the same directory fails on its own leftovers. Everything is
found by path (a mount point or a loop device's backing file under the run directory), so
nothing of another stack or of the host is touched.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def _under(path: str, root: Path) -> bool:
    prefix = str(root.resolve()).rstrip("/") + "/"
    return path.startswith(prefix)


def loops_under(root: Path) -> list[str]:
    """Loop devices whose backing file lies under `root`."""
    res = subprocess.run(["losetup", "--list", "--noheadings", "--raw", "--output", "NAME,BACK-FILE"],
                         capture_output=True, text=True, check=False)
    out = []
    for line in res.stdout.splitlines():
        name, _, back = line.partition(" ")
        if _under(back.replace("\\x20", " "), root):
            out.append(name)
    return out


def mounts_under(root: Path) -> list[str]:
    """Mount points under `root`, deepest first (the order to unmount them in)."""
    found = []
    with open("/proc/self/mounts") as f:
        for line in f:
            point = line.split(" ")[1].replace("\\040", " ")
            if _under(point, root):
                found.append(point)
    return sorted(found, key=lambda p: p.count("/"), reverse=True)


def release(root: Path) -> list[str]:
    """Detach the data plane's loop devices, unmount, detach what is left; returns what was
    released. Raises RuntimeError when a mount under `root` cannot be released."""
    done = []
    mounts = mounts_under(root)
    for dev in loops_under(root):
        backing_mount = any(_mounted_from(dev, m) for m in mounts)
        if not backing_mount:  # a mounted loop (the XFS image) goes with its umount
            subprocess.run(["losetup", "--detach", dev], capture_output=True, check=False)
            done.append(f"loop device {dev}")
    for point in mounts:
        if subprocess.run(["umount", point], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        done.append(f"mount {point}")
    for dev in loops_under(root):  # a loop without autoclear outlives its umount
        subprocess.run(["losetup", "--detach", dev], capture_output=True, check=False)
        done.append(f"loop device {dev}")
    still = mounts_under(root)
    if still:
        raise RuntimeError(f"could not unmount {', '.join(still)}")
    return done


def _mounted_from(dev: str, point: str) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split(" ")[:2] == [dev, point] for line in f)
