"""The KVM hypervisor's side of a VM, as the simulator's orchestration calls it.

CloudStack's KVM agent starts a domain after the storage plugin connected its disks, hot-plugs
a data disk after connecting it, unplugs it before disconnecting, and stops the domain before
the host lets go of the disks; a migration with storage copies each moving disk onto its new
device while the guest runs (`copies`: the disk's path on the source -> its new path on the
destination host). The simulator calls these hooks at the same points; by default
nothing runs (the model's VMs are records), and the local stack installs real guests
(`integration.guests`). Paths are the ones CloudStack stored for the volumes (a volume on a
pool of another kind: its file under the pool's mount point), root first.

An encrypted volume's passphrase travels with its path, as the VolumeObjectTO of CloudStack's
StartCommand / AttachCommand carries it: the KVM agent gives it to libvirt as a secret and opens
the disk through QEMU's LUKS driver (LibvirtComputingResource, `<encryption format='luks'>`), so
the guest sees the plaintext. `passphrases` maps such a path to its passphrase; a path not in
it is a plain disk.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class Hypervisor(Protocol):
    def vm_started(self, vm_id: str, host_id: str, paths: list[str],
                   passphrases: Mapping[str, str] | None = None) -> None: ...

    def vm_stopped(self, vm_id: str) -> None: ...

    def vm_migrated(self, vm_id: str, host_id: str, paths: list[str],
                    passphrases: Mapping[str, str] | None = None) -> None: ...

    def vm_migrated_with_storage(self, vm_id: str, host_id: str, copies: dict[str, str]) -> None: ...

    def disk_attached(self, vm_id: str, host_id: str, path: str, passphrase: str | None = None) -> None: ...

    def disk_detached(self, vm_id: str, host_id: str, path: str) -> None: ...


class NoGuests:
    """VMs without guests: every hook does nothing."""

    def vm_started(self, vm_id: str, host_id: str, paths: list[str],
                   passphrases: Mapping[str, str] | None = None) -> None:
        return None

    def vm_stopped(self, vm_id: str) -> None:
        return None

    def vm_migrated(self, vm_id: str, host_id: str, paths: list[str],
                    passphrases: Mapping[str, str] | None = None) -> None:
        return None

    def vm_migrated_with_storage(self, vm_id: str, host_id: str, copies: dict[str, str]) -> None:
        return None

    def disk_attached(self, vm_id: str, host_id: str, path: str, passphrase: str | None = None) -> None:
        return None

    def disk_detached(self, vm_id: str, host_id: str, path: str) -> None:
        return None
