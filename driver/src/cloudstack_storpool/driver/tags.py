"""The tags every StorPool object created by the plugin carries (the Java plugin's tags, and `pool`).

StorPool is the source of truth: these tags are how an object is traced back to CloudStack
(`uuid`, `cs`), to the VM using it (`cvm`, `disk`, `vc-policy`) and to its QoS tier (`qc`).
"""

from __future__ import annotations

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
