"""Deterministic StorPool names derived from CloudStack uuids.

StorPool's namespace is cluster-wide and name creation is atomic, so a name derived from the
CloudStack uuid makes every create idempotent (a retry meets `objectExists` and finds its own
object) and turns a name into a lock (two management servers filling one template cache race
on one VolumeCreate; exactly one wins). CloudStack itself stores `/dev/storpool-byid/<globalId>`,
so these names may change (migration renames) without CloudStack noticing.
"""

from __future__ import annotations

from cloudstack_storpool.uuids import Uuid, check_uuid

PREFIX = "cs"


def volume(volume_uuid: Uuid) -> str:
    return f"{PREFIX}-vol-{check_uuid(volume_uuid, 'volume_uuid')}"


def migrating(volume_uuid: Uuid) -> str:
    """The clone made while moving a volume to another pool; renamed to `volume()` at the end."""
    return f"{PREFIX}-mig-{check_uuid(volume_uuid, 'volume_uuid')}"


def snapshot(snapshot_uuid: Uuid) -> str:
    return f"{PREFIX}-snap-{check_uuid(snapshot_uuid, 'snapshot_uuid')}"


def template_cache(template_uuid: Uuid, pool_uuid: Uuid, sp_cluster: str | None = None) -> str:
    """The cached template on one pool (a snapshot). Pools in one cluster each have their own;
    in another StorPool cluster of a multi-cluster setup (`sp_cluster`, its SP_CLUSTER_ID) the
    pool has one more, named after that cluster so that names stay unique across the location."""
    base = f"{PREFIX}-tmpl-{check_uuid(template_uuid, 'template_uuid')}-{check_uuid(pool_uuid, 'pool_uuid')}"
    return f"{base}.{sp_cluster}" if sp_cluster else base


def template_fill(template_uuid: Uuid, pool_uuid: Uuid, sp_cluster: str | None = None) -> str:
    """The temporary volume a cache fill copies into; its existence is the fill lock."""
    base = f"{PREFIX}-fill-{check_uuid(template_uuid, 'template_uuid')}-{check_uuid(pool_uuid, 'pool_uuid')}"
    return f"{base}.{sp_cluster}" if sp_cluster else base


def vm_snapshot_member(vm_snapshot_uuid: Uuid, volume_uuid: Uuid) -> str:
    return f"{PREFIX}-vms-{check_uuid(vm_snapshot_uuid, 'vm_snapshot_uuid')}-{check_uuid(volume_uuid, 'volume_uuid')}"


def delay_delete(volume_uuid: Uuid, stamp: int) -> str:
    """`stamp` in milliseconds: a volume restored and deleted again within a second needs a second name."""
    return f"{PREFIX}-deleted-{check_uuid(volume_uuid, 'volume_uuid')}-{stamp}"
