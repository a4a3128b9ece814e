"""The records the StorPool connection layer hands the rest of the project.

Why records and not the bindings' objects: the bindings mirror the wire, quirks included
(`globalId` in camel case, an IOPS limit that is an int or the string `"-"`, a parent or a
template that is `""` when there is none, tags that may be absent). Each quirk read in one
place here means no caller ever tests `isinstance(iops, int)` or spells `globalId` again, and
a test can build a record without a server.

A record addresses its object by `ref` (`~<globalId>`): names can be empty (objects the Java
plugin made are anonymous) or change (renames), the global id cannot.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from cloudstack_storpool import names

Kind = Literal["volume", "snapshot"]
Mode = Literal["rw", "ro"]


class ByGlobalId:
    """How the project addresses an object that has a global id."""

    global_id: str

    @property
    def ref(self) -> str:
        """`~globalId`: survives renames and works for anonymous objects (the Java plugin's)."""
        return "~" + self.global_id

    @property
    def path(self) -> str:
        """What CloudStack stores as the object's path."""
        return names.BYID_PREFIX + self.global_id


@dataclass(frozen=True)
class SpVolume(ByGlobalId):
    """A StorPool volume as the project needs it."""

    name: str
    global_id: str
    size: int
    template: str = ""
    parent: str = ""
    iops: int = 0  # 0: no limit
    bw: int = 0
    tags: Mapping[str, str] = field(default_factory=dict)
    created: float = 0.0
    space_used: int = 0
    """Client data readable through it, its parents' included (`spaceUsed`; VolumesSpace only,
    0 from other listings)."""
    stored: int = 0
    """Client data written to this object itself, without replication (`storedSize`;
    VolumesSpace only)."""
    kind: Kind = "volume"


@dataclass(frozen=True)
class SpSnapshot(SpVolume):
    """A StorPool snapshot: a volume record plus what only snapshots have."""

    on_volume: str = ""
    deleted: bool = False
    transient: bool = False
    delete_at: float = 0.0
    """When StorPool deletes it by itself (`targetDeleteDate`, from a delay-delete); 0: never."""
    recovering: bool = False
    """A copy from another location whose data is still arriving (`recoveringFromRemote`)."""
    kind: Kind = "snapshot"


@dataclass(frozen=True)
class SpExport:
    """A snapshot another location may copy (ExportsList)."""

    global_id: str
    location: str


SpObject = SpVolume  # a volume or a snapshot (SpSnapshot is a subclass); `kind` says which


@dataclass(frozen=True)
class SpTemplate:
    name: str
    iops: int = 0  # 0: no limit
    bw: int = 0
    replication: int = 0  # 0: not set on the template


@dataclass(frozen=True)
class SpAttachment(ByGlobalId):
    """One object attached to one client."""

    name: str
    global_id: str
    kind: Kind
    client: int
    rights: Mode




@dataclass(frozen=True)
class SpActiveRequest:
    """One I/O request in flight on a client (ClientActiveRequests): the heartbeat's evidence
    that a host still writes, and on which volume."""

    volume: str
