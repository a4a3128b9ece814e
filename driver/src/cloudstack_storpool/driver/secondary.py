"""Where data sits on CloudStack's secondary storage, as CloudStack hands it to the driver.

One type for every copy the driver asks an agent for (template fills, snapshot backups, copies
back from secondary), checked with the agent's own rules before anything changes on StorPool.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

from cloudstack_storpool.agentapi.client import AgentRequestError
from cloudstack_storpool.agentapi.locations import check_relative, parse_nfs_url
from cloudstack_storpool.errors import ValidationError

SOURCE_FORMATS = ("raw", "qcow2")


@dataclass(frozen=True)
class SecondaryLocation:
    """Where on secondary storage a copy goes or comes from, as CloudStack hands it over: the
    store (an `nfs://host/export` URL, or an absolute directory on the hosts) and a path
    relative to it."""

    store: str
    path: str

    def check(self, field: str = "secondary") -> SecondaryLocation:
        """The same rules the agent applies, checked before anything changes on StorPool."""
        if not isinstance(self.store, str) or not self.store:
            raise ValidationError(f"{field}.store", "must be an nfs:// URL or an absolute directory")
        if self.store.startswith("nfs://"):
            parse_nfs_url(self.store, f"{field}.store")
        elif not os.path.isabs(self.store):
            raise ValidationError(f"{field}.store", f"{self.store!r} must be an nfs:// URL or an absolute directory")
        check_relative(self.path, f"{field}.path")
        return self



_AGENT_FIELDS = {"store": "store", "path": "path", "source_format": "format", "format": "format"}


@contextlib.contextmanager
def agent_refusals(prefix: str) -> Iterator[None]:
    """An agent's refusal of a location (a store outside its secondary roots, a path it will
    not write) is the caller's bad input: a ValidationError naming the request's field
    (`source.store`), not an upstream failure."""
    try:
        yield
    except AgentRequestError as exc:
        name = _AGENT_FIELDS.get(exc.field or "")
        if exc.code != "invalid" or name is None:
            raise
        raise ValidationError(f"{prefix}.{name}", f"refused by the host's agent: {exc.message}") from exc


@dataclass(frozen=True)
class TemplateSource(SecondaryLocation):
    """A template's image on secondary storage: the store, the install path inside it, and its
    format when CloudStack knows it (qemu-img probes it otherwise)."""

    format: str | None = None

    def __post_init__(self) -> None:
        self.check("source")
        if self.format is not None and self.format.lower() not in SOURCE_FORMATS:
            raise ValidationError("source.format", f"must be one of {', '.join(SOURCE_FORMATS)}, got {self.format!r}")

    @property
    def agent_format(self) -> str | None:
        return self.format.lower() if self.format else None
