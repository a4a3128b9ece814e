"""Secondary-storage locations in the form both sides check: a store (an `nfs://host/export`
URL or an absolute local directory) and a path relative to it. The driver checks a location
before it asks an agent; the agent checks it again when it parses the request, and then holds a
local store to its configured roots and mounts an NFS one (`agent.secondary`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from cloudstack_storpool.errors import ValidationError


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
