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
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from cloudstack_storpool.errors import ProjectError, ValidationError

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class MountError(ProjectError):
    code = "mount"


@dataclass(frozen=True)
class NfsExport:
    host: str
    export: str

    @property
    def source(self) -> str:
        return f"{self.host}:{self.export}"


def parse_nfs_url(url: str, field: str = "store") -> NfsExport:
    """`nfs://host[:port]/export/path` -> host and export; the whole path is the export."""
    parts = urlsplit(url)
    if parts.scheme != "nfs":
        raise ValidationError(field, f"{url!r} is not an nfs:// URL")
    if not parts.hostname:
        raise ValidationError(field, f"{url!r} has no host")
    if parts.hostname.startswith("-"):
        # `host:/export` is an argument of root's `mount`: it must never read as an option.
        raise ValidationError(field, f"{url!r} has an invalid host")
    export = unquote(parts.path).rstrip("/") or "/"
    if not export.startswith("/") or ".." in export.split("/"):
        raise ValidationError(field, f"{url!r} has an invalid export path")
    host = parts.hostname
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return NfsExport(host=host, export=export)


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


def check_relative(path: str, field: str = "path") -> str:
    if not isinstance(path, str) or not path:
        raise ValidationError(field, "must be a non-empty relative path")
    if path.startswith("/") or "\x00" in path:
        raise ValidationError(field, f"{path!r} must be relative to the store")
    if any(p == ".." for p in path.split("/")):
        raise ValidationError(field, f"{path!r} must not contain '..'")
    return path


def check_store(store: str, allowed_roots: tuple[str, ...] | None, field: str = "store") -> str:
    """Validate a store without touching the network: nfs URL or an allowed local dir.

    `allowed_roots` None checks the form only: a request is parsed before (and without) the
    host's configuration, and its local store is held to the roots when it is resolved.
    """
    if not isinstance(store, str) or not store:
        raise ValidationError(field, "must be an nfs:// URL or an absolute directory")
    if store.startswith("nfs://"):
        parse_nfs_url(store, field)
        return store
    if not os.path.isabs(store):
        raise ValidationError(field, f"{store!r} must be an nfs:// URL or an absolute directory")
    if allowed_roots is None:
        return store
    real = os.path.realpath(store)
    for root in allowed_roots:
        root_real = os.path.realpath(root)
        if real == root_real or real.startswith(root_real.rstrip("/") + "/"):
            return store
    raise ValidationError(field, f"{store!r} is not under a configured secondary-storage root")


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
