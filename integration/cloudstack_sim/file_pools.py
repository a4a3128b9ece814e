"""Primary storage of other kinds than StorPool, as CloudStack's default storage provider and its
KVM agent keep it: an NFS export (`nfs://host/path`) and a Ceph RBD pool
(`rbd://[user:secret@]monitor[:port]/pool`), each backed here by a directory of files.

CloudStack parses the URL in CloudStackPrimaryDataStoreLifeCycleImpl.initialize (type
NetworkFilesystem, host, port 2049, path = the export; type RBD, host = the monitor, port 6789,
path = the RBD pool's name) and needs no storage plugin for these pools: the KVM agent mounts the
export (or reaches the RBD pool) and creates, copies and deletes volumes there itself
(LibvirtStorageAdaptor). A volume's `path` is its uuid: the file name under the mount point, or
the RBD image's name. The stand-in keeps every pool under `<root>/<pool uuid>/` (the KVM agent
mounts an NFS pool at /mnt/<pool uuid>); NFS volumes are qcow2 files, RBD images raw ones, and a
guest's disk for such a volume is that file.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from integration.cloudstack_sim import model as m

NFS = "NetworkFilesystem"
RBD = "RBD"
FORMATS = {NFS: "qcow2", RBD: "raw"}
"""The format the KVM agent gives a new volume on each kind of pool."""
DEFAULT_PROVIDER = "DefaultPrimary"


@dataclass(frozen=True)
class PoolUrl:
    type: str
    host: str
    port: int
    path: str


def parse_url(url: str) -> PoolUrl | None:
    """The pool an `nfs://` or `rbd://` URL names; None for another scheme (StorPool's URLs).
    A URL of these schemes without a host or a path is refused, naming the URL."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in ("nfs", "rbd"):
        return None
    parts = urlsplit(url)
    host = parts.hostname or ""
    if scheme == "nfs":
        if not host or not parts.path or parts.path == "/":
            raise m.ParamError(f"host or path is null, should be nfs://hostname/path: {url}")
        return PoolUrl(NFS, host, parts.port or 2049, parts.path)
    pool = parts.path.lstrip("/")
    if not host or not pool:
        raise m.ParamError(f"host or path is null, should be rbd://[user:secret@]monitor/pool: {url}")
    return PoolUrl(RBD, host, parts.port or 6789, pool)


def is_file_pool(pool: m.StoragePool | None) -> bool:
    return pool is not None and pool.type in FORMATS


def pool_dir(model: m.CloudStackModel, pool_id: str) -> Path:
    """Where the KVM hosts see the pool (one directory for every simulated host)."""
    if not model.file_pools:
        raise m.ApiError("The KVM hosts cannot reach primary storage of this kind: the simulator has no "
                         "directory for file-backed pools")
    return Path(model.file_pools) / pool_id


def mount(model: m.CloudStackModel, pool_id: str) -> None:
    """ModifyStoragePoolCommand: the hosts mount the export (create the directory). QEMU, as
    libvirt's unprivileged user, must reach the files in it."""
    where = pool_dir(model, pool_id)
    where.mkdir(parents=True, exist_ok=True)
    for directory in (where.parent, where):
        directory.chmod(0o755)


def volume_file(model: m.CloudStackModel, vol: m.Volume) -> Path:
    """The host's file of a volume on a file-backed pool (its mount point + the volume's path)."""
    if not vol.storage_id or not vol.path:
        raise m.ApiError(f"Volume {vol.name} is not on primary storage")
    return pool_dir(model, vol.storage_id) / vol.path


def _qemu_img(*args: str) -> None:
    done = subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise m.ApiError(f"qemu-img {args[0]} failed: {done.stderr.strip()}")


def _shared(path: Path) -> None:
    """QEMU runs as libvirt's unprivileged user, as on a KVM host whose NFS export it opens."""
    path.chmod(0o666)


def create_blank(model: m.CloudStackModel, pool: m.StoragePool, volume_uuid: str, size: int) -> str:
    """CreateCommand for a blank volume: a new file of the pool's format; returns the path."""
    target = pool_dir(model, pool.id) / volume_uuid
    _qemu_img("create", "-f", FORMATS[pool.type], str(target), str(size))
    _shared(target)
    return volume_uuid


def create_from_template(model: m.CloudStackModel, pool: m.StoragePool, volume_uuid: str, template: Path,
                         template_format: str, size: int) -> str:
    """A ROOT volume from a template on the image store (the KVM agent copies it onto the pool,
    then the volume from it), grown to `size` when that is bigger; returns the path."""
    target = pool_dir(model, pool.id) / volume_uuid
    _qemu_img("convert", "-f", template_format.lower(), "-O", FORMATS[pool.type], str(template), str(target))
    _qemu_img("resize", "-f", FORMATS[pool.type], str(target), str(size))
    _shared(target)
    return volume_uuid


def copy_out(model: m.CloudStackModel, vol: m.Volume, store: Path, relative: str) -> str:
    """CopyCommand of a volume to the image store (the first half of an offline move between
    pools of different kinds); returns the format written (qcow2, as the KVM agent writes)."""
    target = store / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    pool = model.storage_pools[vol.storage_id or ""]
    _qemu_img("convert", "-f", FORMATS[pool.type], "-O", "qcow2", str(volume_file(model, vol)), str(target))
    return "qcow2"


def delete(model: m.CloudStackModel, vol: m.Volume) -> None:
    """DeleteCommand: the volume's file goes."""
    volume_file(model, vol).unlink(missing_ok=True)


def unmount(model: m.CloudStackModel, pool_id: str) -> None:
    """DeleteStoragePoolCommand: the hosts unmount the pool (the directory goes once empty)."""
    where = pool_dir(model, pool_id)
    if where.is_dir() and not any(where.iterdir()):
        where.rmdir()
