"""Which StorPool object a CloudStack volume is, and whether an object found by name is ours.

Every driver module addresses volumes the same way: CloudStack stores
`/dev/storpool-byid/<globalId>` as a volume's path (it survives the rename at the end of a
migration), and a volume without a path yet is addressed by its deterministic name
`naming.volume(uuid)`. A create that meets `objectExists` found either its own earlier attempt
(a retried request) or a stranger; the `uuid` tag tells which. Both rules live here so that
volumes, snapshots, resize, VM snapshots and migration cannot disagree about them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from cloudstack_storpool import names
from cloudstack_storpool.driver import naming, pools, tags
from cloudstack_storpool.errors import Conflict, NotFound, ValidationError
from cloudstack_storpool.uuids import Uuid

if TYPE_CHECKING:
    from cloudstack_storpool.cloudstack.records import Volume
    from cloudstack_storpool.driver.context import DriverContext
    from cloudstack_storpool.driver.offerings import Placement
    from cloudstack_storpool.poolconfig import PoolSpec
    from cloudstack_storpool.spconn import StorPoolConn
    from cloudstack_storpool.sprecords import SpVolume

V = TypeVar("V", bound="SpVolume")


@dataclass(frozen=True)
class VolumeInfo:
    """A StorPool volume as the driver reports it to CloudStack."""

    uuid: str | None
    pool: str
    name: str
    global_id: str
    path: str
    """What CloudStack stores: `/dev/storpool-byid/<globalId>`."""
    size: int | None
    """Bytes; None when created from a template without a size (the template's size)."""
    template: str | None
    iops: int | None
    """The StorPool IOPS limit; None: no limit."""
    qos_class: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LocatedVolume:
    """A CloudStack volume on one of our pools, with the StorPool name to address it by."""

    cs: Volume
    pool: PoolSpec
    name: str

    @property
    def uuid(self) -> str:
        return self.cs.id

    @property
    def global_id(self) -> str | None:
        """The StorPool global id, when CloudStack's path holds it (it names the cluster)."""
        path = self.cs.path or ""
        return path[len(names.BYID_PREFIX):] if path.startswith(names.BYID_PREFIX) else None


def ref(*, volume_uuid: Uuid | None = None, path: str | None = None, path_field: str = "path") -> str:
    """The StorPool API name of a CloudStack volume: from its path when known (`~globalId`,
    stable across renames; legacy `/dev/storpool/<name>`), else from its uuid. `path_field`
    names the path in errors (it may come from CloudStack rather than from the request)."""
    if path:
        return names.path_to_name(path, path_field)
    if volume_uuid:
        return naming.volume(volume_uuid)
    raise ValidationError("volume_uuid", "a volume uuid or path is required")


def locate(ctx: DriverContext, volume_uuid: Uuid, field: str = "volume_uuid") -> LocatedVolume:
    """Look a CloudStack volume up and make sure it lives on one of our pools."""
    naming.check_uuid(volume_uuid, field)
    vol = ctx.cloudstack.volume(volume_uuid)
    if vol is None:
        raise NotFound(f"{field}: CloudStack has no volume {volume_uuid}")
    return _located(ctx, vol, field)


def on_storpool(ctx: DriverContext, vol: Volume, field: str = "volume") -> LocatedVolume | None:
    """The volume's StorPool handle, or None when it is on some other kind of pool."""
    try:
        return _located(ctx, vol, field)
    except ValidationError:
        return None


def _located(ctx: DriverContext, vol: Volume, field: str) -> LocatedVolume:
    if not vol.storage_id:
        raise ValidationError(field, f"volume {vol.id} is not on a primary storage pool")
    try:
        pool = ctx.pool(vol.storage_id)
    except ValidationError:
        raise ValidationError(field, f"volume {vol.id} is not on a StorPool pool (pool {vol.storage_id})") from None
    return LocatedVolume(vol, pool, ref(volume_uuid=vol.id, path=vol.path, path_field=f"{field}.path"))


def info(summary: SpVolume, pool: PoolSpec) -> VolumeInfo:
    """VolumeInfo of a StorPool volume summary (from Volume/VolumesList)."""
    vtags = dict(summary.tags)
    return VolumeInfo(
        uuid=vtags.get(tags.UUID), pool=pool.uuid, name=summary.name, global_id=summary.global_id,
        path=summary.path, size=summary.size,
        template=summary.template or None, iops=summary.iops or None,
        qos_class=vtags.get(tags.QOS_CLASS), tags=vtags,
    )


def find(ctx: DriverContext, pool: PoolSpec | str, *, volume_uuid: Uuid | None = None,
         path: str | None = None) -> SpVolume | None:
    """The StorPool summary of a CloudStack volume, or None when it does not exist."""
    spec = pools.resolve(ctx, pool)
    return ctx.conn(spec).volume(ref(volume_uuid=volume_uuid, path=path))


def get(ctx: DriverContext, pool: PoolSpec | str, *, volume_uuid: Uuid | None = None,
        path: str | None = None) -> VolumeInfo:
    """Like `find`, as VolumeInfo; NotFound when the volume does not exist."""
    spec = pools.resolve(ctx, pool)
    found = find(ctx, spec, volume_uuid=volume_uuid, path=path)
    if found is None:
        raise NotFound(f"volume: {path or volume_uuid} does not exist on pool {spec.name}")
    return info(found, spec)


def volume_tags(volume_uuid: Uuid, pool: PoolSpec, placement: Placement | None = None) -> dict[str, str]:
    """Identity tags of a new volume: `uuid`, `cs`, `pool` (+ `qc`)."""
    return pools.identity_tags(volume_uuid, tags.VOLUME, pool, qc=placement.qos_class if placement is not None else None)


def ours(found: V | None, uuid: str, what: str, field: str) -> V:
    """An object a create met under its deterministic name (`what`): returned when it carries
    our `uuid` tag (an earlier attempt of this very request), a Conflict naming `field` otherwise."""
    if found is None:
        raise Conflict(f"{field}: {what} existed a moment ago and is gone now (deleted concurrently?)")
    if not tags.owned_by(found, uuid):
        owner = found.tags.get(tags.UUID) or "nobody"
        raise Conflict(f"{field}: StorPool already has {what}, and it belongs to {owner}")
    return found


def existing_volume(conn: StorPoolConn, name: str, volume_uuid: Uuid) -> SpVolume:
    """The volume a create of `volume_uuid` met as `objectExists`, if it is ours (one Volume read)."""
    return ours(conn.volume(name), volume_uuid, f"volume {name}", "volume_uuid")
