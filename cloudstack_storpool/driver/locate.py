"""Finding StorPool objects from what CloudStack hands the plugin.

CloudStack stores a path for every volume and snapshot (`/dev/storpool-byid/<globalId>`) and
hands it to the plugin with each operation: that path is the object, whoever made it. The
project's own objects also have deterministic names (`naming`), which make creates idempotent;
the Java plugin's are anonymous (`"name": ""`) and carry only their tags (`uuid`, `cs`, ...).

So an object is found, in this order: by the path CloudStack gave; by the project's name; and
only when StorPool has no such name, by the tags the Java plugin put on it (one listing). The
project's own objects therefore cost no extra call; a Java-made one costs one list, once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from cloudstack_storpool import names
from cloudstack_storpool.driver import naming, pools, tags
from cloudstack_storpool.errors import SpNotFound, ValidationError

if TYPE_CHECKING:
    from cloudstack_storpool.poolconfig import PoolSpec
    from cloudstack_storpool.spconn import StorPoolConn
    from cloudstack_storpool.sprecords import SpSnapshot, SpVolume

log = logging.getLogger(__name__)

T = TypeVar("T")


def java_snapshot(conn: StorPoolConn, snapshot_uuid: str) -> SpSnapshot | None:
    """A volume snapshot the Java plugin took: anonymous, tagged `uuid=<snapshot uuid>`,
    `cs=snapshot` (the newest, should there be several)."""
    found = conn.find_snapshots({tags.UUID: snapshot_uuid.lower(), tags.KIND: tags.SNAPSHOT})
    return max(found, key=lambda s: s.created) if found else None


def on_snapshot(conn: StorPoolConn, snapshot_uuid: str, path: str | None, action: Callable[[str], T],
                field: str = "path") -> T:
    """Run `action` with the snapshot's API name: from the path CloudStack stored when given;
    else the project's name, and if StorPool has no object by that name, the Java plugin's
    snapshot of that uuid. SpNotFound when there is neither."""
    if path:
        return action(names.path_to_name(path, field))
    try:
        return action(naming.snapshot(snapshot_uuid))
    except SpNotFound:
        found = java_snapshot(conn, snapshot_uuid)
        if found is None:
            raise
        log.info("snapshot %s is the Java plugin's %s", snapshot_uuid, found.ref)
        return action(found.ref)


def snapshot_name(conn: StorPoolConn, snapshot_uuid: str, path: str | None, field: str = "path") -> str:
    """The API name of a snapshot that exists (path, project name or Java-made); the project's
    name when none is found, so the caller's own not-found handling applies."""
    if path:
        return names.path_to_name(path, field)
    own = naming.snapshot(snapshot_uuid)
    if conn.snapshot(own) is not None:
        return own
    found = java_snapshot(conn, snapshot_uuid)
    return found.ref if found is not None else own


def java_template_cache(conn: StorPoolConn, spec: PoolSpec, template_uuid: str) -> SpSnapshot | None:
    """The cached template the Java plugin made on a pool: a snapshot tagged `uuid=<template>`,
    `cs=template`, living in the pool's template, and not the template's own StorPool copy
    (`pools.templates_kept_as_snapshots`). Only pools the Java plugin initialised (id `<template>;<uuid>`) are
    searched: others cannot hold one, and need not pay the listing."""
    if spec.key == spec.uuid:
        return None
    found = [s for s in conn.find_snapshots({tags.UUID: template_uuid.lower(), tags.KIND: tags.TEMPLATE})
             if pools.owns(spec, s)]
    kept = pools.templates_kept_as_snapshots(found, lambda ref: _volume_or_none(conn, ref))
    caches = [s for s in found if s.global_id not in kept]
    return max(caches, key=lambda s: s.created) if caches else None


def _volume_or_none(conn: StorPoolConn, name: str) -> SpVolume | None:
    try:
        return conn.volume(name)
    except ValidationError:  # not a volume name (`*name`: being deleted)
        return None


def group_members(conn: StorPoolConn, vm_snapshot_uuid: str) -> list[SpSnapshot]:
    """Every member of a VM snapshot by its group tags (`uuid=<vm snapshot>`, `cs=group`)."""
    return conn.find_snapshots({tags.UUID: vm_snapshot_uuid.lower(), tags.KIND: tags.GROUP})


def member_of(members: list[SpSnapshot], disk_ref: str) -> SpSnapshot | None:
    """The member of a Java-made group snapshot taken of one disk (`~globalId` or name): the
    snapshot whose `onVolume` is that disk."""
    want = {disk_ref, disk_ref.removeprefix("~")}
    return next((s for s in members if s.on_volume in want), None)
