"""The tags every StorPool object created by the plugin carries (REFERENCE.md, "Tags").

StorPool is the source of truth: these tags are how an object is traced back to CloudStack
(`uuid`, `cs`), to the VM using it (`cvm`, `disk`, `vc-policy`) and to its QoS tier (`qc`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeGuard

UUID: Final = "uuid"
KIND: Final = "cs"
VM: Final = "cvm"
DISK: Final = "disk"
VC_POLICY: Final = "vc-policy"
QOS_CLASS: Final = "qc"
POOL: Final = "pool"
STARTED: Final = "started"
ALIVE: Final = "alive"
"""Epoch seconds its owner last proved it is still working on an object (`liveness.py`)."""

VOLUME: Final = "volume"
SNAPSHOT: Final = "snapshot"
TEMPLATE: Final = "template"
GROUP: Final = "group"
TEMPORARY: Final = "temporary"
DELAY_DELETE: Final = "delayDelete"
CHECK_VOLUME: Final = "check-volume-is-on-host"
"""The Java plugin's host listener's volume, one per CloudStack cluster (512 bytes, no uuid):
the pool's detail `SP_VOLUME_ON_CLUSTER-<cluster id>` keeps its path."""


@dataclass(frozen=True)
class ObjectKind:
    """One kind of StorPool object a CloudStack StorPool plugin (the Java one or this project)
    makes, as its `cs` tag says, and what accounts for it. Whatever is not in `OBJECT_KINDS` is
    someone else's: it is reported, never changed."""

    cs: str
    record: str | None
    """The CloudStack object its `uuid` tag names and without which it is abandoned: `volume`,
    `snapshot`, `vm_snapshot` or `template` (a RECORD_* value). None: no CloudStack record
    stands for it, so CloudStack's listings can never make it an orphan."""
    what: str
    """What it is and who removes it: the reason `pool adopt` gives for keeping it."""


RECORD_VOLUME: Final = "volume"
RECORD_SNAPSHOT: Final = "snapshot"
RECORD_VM_SNAPSHOT: Final = "vm_snapshot"
RECORD_TEMPLATE: Final = "template"

OBJECT_KINDS: Final[Mapping[str, ObjectKind]] = {k.cs: k for k in (
    ObjectKind(VOLUME, RECORD_VOLUME, "a CloudStack volume (its uuid, or the path CloudStack stores)"),
    ObjectKind(SNAPSHOT, RECORD_SNAPSHOT, "a CloudStack volume snapshot kept on StorPool"),
    ObjectKind(GROUP, RECORD_VM_SNAPSHOT, "a member of a CloudStack VM snapshot (one group snapshot of its disks)"),
    ObjectKind(TEMPLATE, RECORD_TEMPLATE,
               "a template cached on the pool, or the Java plugin's volume being filled with it"),
    ObjectKind(TEMPORARY, None, "a temporary object of a copy in progress: GC deletes it once it is old"),
    ObjectKind(DELAY_DELETE, None,
               "a delay-delete backup of a deleted volume: StorPool deletes it when its deleteAfter runs out"),
    ObjectKind(CHECK_VOLUME, None,
               "the Java host listener's check volume of a CloudStack cluster (pool detail "
               "SP_VOLUME_ON_CLUSTER-<cluster>, which the API does not show): kept while the pool is"),
)}
"""Every `cs` value either plugin writes (the Java plugin's StorPoolUtil and host listener, and
this project's driver), in one table: adopt and the audits classify by it."""


VM_TAGS: Final = (VM, DISK, VC_POLICY)
"""Tags that describe the VM a volume is attached to: set on attach, cleared on detach/destroy."""


def identity(uuid: str, kind: str, **extra: str | None) -> dict[str, str]:
    """`uuid` + `cs` (+ extra tags whose value is not None)."""
    out = {UUID: uuid, KIND: kind}
    out.update({k.replace("_", "-"): v for k, v in extra.items() if v is not None})
    return out


def cleared(*keys: str) -> dict[str, str]:
    """A tag update that removes `keys` (StorPool removes a tag written with an empty value)."""
    return dict.fromkeys(keys, "")


def owned_by(obj: Any | None, uuid: str) -> TypeGuard[Any]:
    """`obj` (a StorPool summary, or None when absent) carries the `uuid` tag of this CloudStack
    object: how a create that met `objectExists` tells its own earlier attempt from a stranger."""
    return obj is not None and (obj.tags or {}).get(UUID) == uuid
