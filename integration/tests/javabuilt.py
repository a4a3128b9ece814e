"""A cloud the Java plugin built, made from StorPoolUtil's request bodies through the official
`storpool` bindings: a fixture independent of `integration/javacloud.py`.

`javacloud.py` replays the Java plugin with its own raw HTTP client. This module sends the same
kind of bodies another way, through the bindings' own request method (`spapi.Api.__call__`,
which posts a body as given: `"name": ""`, no `pool` tag), and covers what the Java plugin
leaves that `javacloud.py` does not:

* the host listener's check volume per CloudStack cluster (`cs=check-volume-is-on-host`, 512
  bytes), its path in the pool's details under `SP_VOLUME_ON_CLUSTER-<cluster id>`;
* a template cached from the image store the current way: a `cs=template` volume, filled, then
  frozen (VolumeFreeze); its path in template_spool_ref;
* a template made from a volume (copyAsync volume -> template): a VolumeSnapshot of the volume
  tagged `uuid=<template>`, `cs=template`, `vc-policy=no`, kept as the template's image-store
  copy (template detail `spStoragePoolId`), and, once deployed on the pool, the pool's cache: a
  volume cloned from that snapshot and frozen;
* a volume snapshot with its path in snapshot_details (key: the snapshot's uuid) and the
  snapshot detail `spStoragePoolId`;
* a snapshot of the plugin's first versions: named, no tags, path `/dev/storpool/<name>`;
* a volume deleted with `storpool.delete.after.interval` set: its backup is VolumeSnapshot with
  StorPoolSnapshotDef's body `{"deleteAfter": N, "tags": {"cs": "delayDelete"}}` (no name, no
  uuid tag), then VolumeDelete; CloudStack's record is gone (expunged).

The CloudStack side goes into the simulator's model as CloudStack's database holds it.
"""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cloudstack_storpool import names
from integration.cloudstack_sim import model as m

if TYPE_CHECKING:
    from integration.stack import LocalStack

MiB = 1 << 20
TEMPLATE = "nvme"
POOL_NAME = "java-built"
DELETE_AFTER = 86400
"""`storpool.delete.after.interval` when the Java plugin deleted the volume (seconds)."""
SP_STORAGE_POOL_ID = "spStoragePoolId"
SP_VOLUME_ON_CLUSTER = "SP_VOLUME_ON_CLUSTER"
CACHED_MARK = b"java-built-cached-template"
DELETED_MARK = b"java-built-deleted-volume"
SNAPSHOT_MARK = b"java-built-snapshot"
LEGACY_MARK = b"java-built-legacy"


def add_storpool_tags(name: str | None, vm_uuid: str | None, cs_tag: str | None,
                      vc_policy: str | None) -> dict[str, str]:
    """StorPoolHelper.addStorPoolTags: `uuid`, `cvm`, `vc-policy`, and `cs` when given. Gson
    writes no null map value, so the unset ones are absent."""
    tags = {"uuid": name, "cvm": vm_uuid, "vc-policy": vc_policy, "cs": cs_tag}
    return {k: v for k, v in tags.items() if v is not None}


class StorPoolUtil:
    """StorPoolUtil's requests, one method each, through the bindings' request method."""

    def __init__(self, api: Any, template: str) -> None:
        self.api, self.template = api, template
        self.sent: list[tuple[str, Any]] = []

    def post(self, query: str, body: Any) -> Any:
        """`POST MultiCluster/<query>` with `body`; the answer's `data`."""
        self.sent.append((query, body))
        return self.api("POST", True, query, body)

    def volume_create(self, name: str | None, parent_name: str | None, size: int | None, vm_uuid: str | None,
                      vc_policy: str | None, cs_tag: str | None, iops: int | None) -> str:
        """volumeCreate: `{"name": "", "iops", "parent", "size", "template", "tags"}`; the new
        volume's name (`~globalId`), as getNameFromResponse(resp, true) reads it."""
        body = {"name": "", "iops": iops, "parent": parent_name, "size": size, "template": self.template,
                "tags": add_storpool_tags(name, vm_uuid, cs_tag, vc_policy)}
        return "~" + str(self.post("VolumeCreate", body)["globalId"])

    def volume_create_check(self) -> str:
        """volumeCreate(conn): the host listener's check volume."""
        body = {"name": "", "size": 512, "template": self.template, "tags": {"cs": "check-volume-is-on-host"}}
        return "~" + str(self.post("VolumeCreate", body)["globalId"])

    def volume_snapshot(self, volume_name: str, snapshot_name: str | None, vm_uuid: str | None, cs_tag: str | None,
                        vc_policy: str | None) -> str:
        """volumeSnapshot: `{"tags": {...}, "name": ""}`; `~snapshotGlobalId`."""
        body = {"tags": add_storpool_tags(snapshot_name, vm_uuid, cs_tag, vc_policy), "name": ""}
        return "~" + str(self.post(f"VolumeSnapshot/{volume_name}", body)["snapshotGlobalId"])

    def volume_snapshot_def(self, volume_name: str, delete_after: int, tags: dict[str, str]) -> str:
        """volumeSnapshot(StorPoolSnapshotDef): Gson writes its non-null fields, `deleteAfter` and
        `tags` (`volumeName` is transient)."""
        body = {"deleteAfter": delete_after, "tags": tags}
        return "~" + str(self.post(f"VolumeSnapshot/{volume_name}", body)["snapshotGlobalId"])

    def volume_freeze(self, volume_name: str) -> None:
        self.post(f"VolumeFreeze/{volume_name}", None)

    def volume_update_tags(self, name: str, vm_uuid: str | None, iops: int | None, vc_policy: str | None) -> None:
        """volumeUpdateTags (attach): `{"iops", "tags": {cvm, vc-policy}}`."""
        self.post(f"VolumeUpdate/{name}", {"iops": iops, "tags": add_storpool_tags(None, vm_uuid, None, vc_policy)})

    def volume_delete(self, name: str) -> None:
        self.post(f"VolumeDelete/{name}", {"onAttached": "detachForce"})


def dev_path(name: str) -> str:
    """StorPoolUtil.devPath of getNameFromResponse(resp, false): `/dev/storpool-byid/<globalId>`."""
    return names.BYID_PREFIX + name.removeprefix("~")


@dataclass
class JavaBuilt:
    """What `build` made: CloudStack ids, and the StorPool path CloudStack keeps for each."""

    pool_id: str
    vm_id: str
    root_volume: str
    data_volume: str
    cached_template: str
    """A template registered from a URL, cached on the pool (a frozen `cs=template` volume)."""
    volume_template: str
    """A template made from the data volume: kept as a StorPool snapshot, and cached on the pool."""
    volume_template_snapshot: str
    """Path of the snapshot the Java plugin keeps as the template made from a volume (template_store_ref)."""
    snapshot: str
    """A volume snapshot of the data volume (path in snapshot_details)."""
    legacy_snapshot: str
    """A snapshot of the plugin's first versions: named, untagged, path `/dev/storpool/<name>`."""
    deleted_volume: str
    """CloudStack uuid of a volume the Java plugin deleted with a delay-delete backup."""
    deleted_volume_path: str
    """The path CloudStack stored for that volume (the backup's `onVolume`)."""
    check_volumes: list[str] = field(default_factory=list)
    """Paths of the host listener's check volumes (one per CloudStack cluster)."""
    paths: dict[str, str] = field(default_factory=dict)
    """CloudStack uuid -> the path CloudStack keeps (volumes; snapshots; templates: the pool's copy)."""
    wire: list[tuple[str, Any]] = field(default_factory=list)

    def ref(self, cs_uuid: str) -> str:
        return names.path_to_name(self.paths[cs_uuid])


def build(stack: LocalStack, *, template: str = TEMPLATE) -> JavaBuilt:
    """Fill `stack` with a cloud the Java plugin built on StorPool template `template`, and list
    its pool in the pools file under the Java pool id (a takeover's first step)."""
    model = stack.cs.model
    util = StorPoolUtil(stack.sp.api(), template)
    zone = stack.zone_id

    # LifeCycle.initialize: pool uuid `<template>;<uuid>`, SP_TEMPLATE among its details.
    pool_id = f"{template};{uuidlib.uuid4()}"
    pool = model.add_storage_pool(POOL_NAME, zone, pool_id=pool_id)
    pool.details["SP_TEMPLATE"] = template
    with open(stack.pools_file, "a") as f:
        f.write(f'\n[[pool]]\nuuid = "{pool_id}"\nname = "{POOL_NAME}"\nzone = "{zone}"\n'
                f'url = "{stack.sp.pool_url(template)}"\n')
    stack.ctx.pools = stack.pools()

    # StorPoolHostListener.hostConnect: the client id in `parent`; one check volume per cluster.
    check_volumes = []
    for host in model.hosts.values():
        cid = host.details.pop("SP_OURID", None)
        if cid:
            host.parent = cid
        key = f"{SP_VOLUME_ON_CLUSTER}-{host.cluster_id}"
        if key not in pool.details:
            pool.details[key] = dev_path(util.volume_create_check())
            check_volumes.append(pool.details[key])

    paths: dict[str, str] = {}

    # copyAsync(template on the image store -> pool), no StorPool copy of it yet: a volume for
    # the template, filled on a host, frozen. template_spool_ref keeps its path.
    cached = model.add_template("java-built-url-tmpl", 16 * MiB, zone_id=zone)
    fill = util.volume_create(cached.id, None, 16 * MiB, None, "no", "template", None)
    stack.sp.write_object(fill, 0, CACHED_MARK)
    util.volume_freeze(fill)
    _cached_on(cached, pool_id, dev_path(fill))
    paths[cached.id] = dev_path(fill)

    # A stopped VM: its root volume from the cache, a data disk created for it.
    host_id = next(iter(model.hosts))
    vm = model.add_vm("java-built-vm", template_id=cached.id, host_id=host_id, state="Stopped",
                      storage_id=pool_id, root_size=16 * MiB)
    root_id = next(v.id for v in model.volumes.values() if v.vm_id == vm.id and v.type == "ROOT")
    root = util.volume_create(root_id, fill, 16 * MiB, vm.id, None, "volume", None)
    model.update_volume(root_id, path=dev_path(root), template_id=cached.id)
    data_id = str(uuidlib.uuid4())
    data = util.volume_create(data_id, None, 8 * MiB, vm.id, None, "volume", 300)
    model.add_volume("java-built-data", 8 * MiB, vm_id=vm.id, storage_id=pool_id, device_id=1, path=dev_path(data),
                     volume_id=data_id, max_iops=300)
    paths[root_id], paths[data_id] = dev_path(root), dev_path(data)
    stack.sp.write_object(data, 0, SNAPSHOT_MARK)

    # takeSnapshot: snapshot_details[<snapshot uuid>] = its path, and `spStoragePoolId`.
    snap = model.add_snapshot(data_id, "java-built-snap", storage_id=pool_id, size=8 * MiB)
    sref = util.volume_snapshot(data, snap.id, vm.id, "snapshot", None)
    snap.details.update({snap.id: dev_path(sref), SP_STORAGE_POOL_ID: pool_id})
    paths[snap.id] = dev_path(sref)

    # copyAsync(volume -> template): the data volume's snapshot is the template (template_store_ref
    # path, detail spStoragePoolId); deployed on the pool it is cloned and frozen as the pool's cache.
    from_volume = model.add_template("java-built-volume-tmpl", 8 * MiB, zone_id=zone)
    kept = util.volume_snapshot(data, from_volume.id, None, "template", "no")
    from_volume.details[SP_STORAGE_POOL_ID] = pool_id
    clone = util.volume_create(from_volume.id, kept, 8 * MiB, None, "no", "template", None)
    util.volume_freeze(clone)
    _cached_on(from_volume, pool_id, dev_path(clone))
    paths[from_volume.id] = dev_path(clone)

    # A snapshot of the plugin's first versions: a name, no tags, a /dev/storpool/<name> path.
    legacy = model.add_snapshot(data_id, "java-built-legacy", storage_id=pool_id, size=8 * MiB)
    legacy_name = f"snap-{legacy.id[:8]}"
    stack.sp.write_object(data, 0, LEGACY_MARK)
    util.post(f"VolumeSnapshot/{data}", {"name": legacy_name})
    legacy.details[legacy.id] = names.LEGACY_PREFIX + legacy_name
    paths[legacy.id] = names.LEGACY_PREFIX + legacy_name
    stack.sp.write_object(data, 0, SNAPSHOT_MARK)

    # deleteAsync with storpool.delete.after.interval: backup (cs=delayDelete only), delete;
    # the volume's record is expunged.
    gone_id = str(uuidlib.uuid4())
    gone = util.volume_create(gone_id, None, 4 * MiB, None, None, "volume", None)
    stack.sp.write_object(gone, 0, DELETED_MARK)
    util.volume_snapshot_def(gone, DELETE_AFTER, {"cs": "delayDelete"})
    util.volume_delete(gone)

    model.save()
    return JavaBuilt(pool_id=pool_id, vm_id=vm.id, root_volume=root_id, data_volume=data_id,
                     cached_template=cached.id, volume_template=from_volume.id,
                     volume_template_snapshot=dev_path(kept), snapshot=snap.id, legacy_snapshot=legacy.id,
                     deleted_volume=gone_id, deleted_volume_path=dev_path(gone), check_volumes=check_volumes,
                     paths=paths, wire=util.sent)


def _cached_on(tpl: m.Template, pool_id: str, path: str) -> None:
    """template_spool_ref: the template is on the pool, at `path`."""
    tpl.pools.append(pool_id)
    tpl.pool_paths[pool_id] = path
