"""Secondary storage as the agent sees it: a store (an `nfs://host/export` URL or a local
directory) plus a relative path inside it.

CloudStack hands hosts an NFS URL and an install path; the agent mounts the export once
under its mount root and reuses the mount. Local directories are accepted only under the
configured secondary roots, and relative paths may not climb out of their store: the agent
runs as root and must not become a way to read or overwrite arbitrary host files.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess

from cloudstack_storpool.agentapi.locations import check_relative, check_store, parse_nfs_url
from cloudstack_storpool.errors import ProjectError, ValidationError

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class MountError(ProjectError):
    code = "mount"


def mountpoint_for(url: str, mount_root: str, field: str = "store") -> str:
    """A stable, unique, readable directory for one export under the mount root.

    Readable so an operator can find it in `mount`; hashed suffix so two exports whose
    sanitised names collide never share a directory.
    """
    nfs = parse_nfs_url(url, field)
    readable = _SAFE.sub("_", f"{nfs.host}{nfs.export}").strip("_")[:80]
    digest = hashlib.sha256(nfs.source.encode()).hexdigest()[:12]
    return os.path.join(mount_root, f"{readable}-{digest}")


def _is_mounted(path: str) -> bool:
    return os.path.ismount(path)


def ensure_mounted(url: str, mount_root: str, field: str = "store", timeout: float = 120.0) -> str:
    """Mount the export (once) and return its mountpoint; clear errors when impossible."""
    mp = mountpoint_for(url, mount_root, field)
    if _is_mounted(mp):
        return mp
    nfs = parse_nfs_url(url, field)
    if shutil.which("mount.nfs") is None and not os.path.exists("/sbin/mount.nfs"):
        raise MountError(
            f"cannot mount {nfs.source}: no NFS client on this host (install nfs-common / nfs-utils)"
        )
    os.makedirs(mp, mode=0o755, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "nfs", "-o", "nosuid,nodev,noexec", nfs.source, mp],
        capture_output=True, text=True, timeout=timeout, check=False,
    )
    if proc.returncode != 0:
        raise MountError(f"mount {nfs.source} on {mp} failed: {proc.stderr.strip() or proc.returncode}")
    return mp


def resolve(store: str, path: str, *, mount_root: str, allowed_roots: tuple[str, ...],
            store_field: str = "store", path_field: str = "path") -> str:
    """Absolute local path of `path` inside `store`, mounting an NFS store if needed."""
    check_store(store, allowed_roots, store_field)
    check_relative(path, path_field)
    base = ensure_mounted(store, mount_root, store_field) if store.startswith("nfs://") else store
    full = os.path.normpath(os.path.join(base, path))
    base_real = os.path.realpath(base)
    # Symlinks inside the store (in a directory or as the file itself) must not lead out of it.
    for candidate in (os.path.dirname(full), full):
        real = os.path.realpath(candidate)
        if real != base_real and not real.startswith(base_real.rstrip("/") + "/"):
            raise ValidationError(path_field, f"{path!r} leads outside the store")
    return full
