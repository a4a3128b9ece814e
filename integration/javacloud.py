"""A cloud built the Java plugin's way, for the takeover tests and for trying by hand.

Every CloudStack + StorPool cloud in production today was built by the Java plugin
(`plugins/storage/volume/storpool` in Apache CloudStack). This module fills a running local
stack the same way:

* StorPool gets the Java plugin's own request bodies (`JavaWire`), sent as raw JSON over HTTP,
  not through the bindings: anonymous objects (`"name": ""`), JSON nulls, tags without `pool`,
  copies with `baseOn` and no name, group snapshots of anonymous members.
* CloudStack (the simulator) gets the records the Java plugin leaves: a storage pool whose id is
  `<SP_TEMPLATE>;<uuid>`, volume paths `/dev/storpool-byid/<globalId>`, snapshot paths in the
  snapshot's details (key: the snapshot's uuid), VM-snapshot member paths in the VM snapshot's
  details (key: the volume's uuid), hosts whose StorPool client id is in `parent` (and not in an
  `SP_OURID` detail).

`python -m integration up --java-cloud` runs a stack with this cloud in it.
"""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cloudstack_storpool import names

if TYPE_CHECKING:
    from integration.stack import LocalStack
    from integration.storpool_sim.testing import EmulatorHandle

MiB = 1 << 20
JAVA_TEMPLATE = "nvme"
"""The StorPool template of the Java pool (one pool per endpoint and template, as the Java plugin allows)."""
JAVA_POOL_NAME = "storpool-java"
TEMPLATE_MARK = b"java-cached-template"
"""Bytes at offset 0 of the template the Java plugin cached: a root volume from it must read them."""


class JavaWireError(RuntimeError):
    def __init__(self, query: str, status: int, error: dict[str, Any]) -> None:
        super().__init__(f"{query}: HTTP {status} {error}")
        self.query, self.status, self.error = query, status, error


def _tags(uuid: str | None, vm_uuid: str | None, cs_tag: str | None, vc_policy: str | None) -> dict[str, str]:
    """StorPoolHelper.addStorPoolTags: `uuid`, `cvm`, `vc-policy` (+ `cs`). Gson leaves the
    null ones out of the JSON."""
    raw = {"uuid": uuid, "cvm": vm_uuid, "vc-policy": vc_policy, "cs": cs_tag}
    return {k: v for k, v in raw.items() if v is not None}


class JavaWire:
    """The Java plugin's StorPoolUtil requests, byte for byte in shape, over raw HTTP."""

    def __init__(self, sp: EmulatorHandle, template: str) -> None:
        self.sp, self.template = sp, template
        self.sent: list[tuple[str, Any]] = []

    def post(self, query: str, body: Any) -> dict[str, Any]:
        """POST `MultiCluster/<query>` with `body` as raw JSON; the `data` of the answer."""
        self.sent.append((query, body))
        status, answer = self.sp.raw("POST", f"/ctrl/1.0/MultiCluster/{query}", body)
        if status != 200:
            raise JavaWireError(query, status, answer.get("error", {}))
        data = answer.get("data")
        return dict(data) if isinstance(data, dict) else {"data": data}

    # -- StorPoolUtil, one method per request body ----------------------------------------------

    def volume_create(self, uuid: str | None, parent: str | None, size: int | None, vm_uuid: str | None,
                      vc_policy: str | None, cs_tag: str | None, iops: int | None) -> str:
        """`{"name": "", "iops": ..., "parent": ..., "size": ..., "template": T, "tags": {...}}`; `~globalId`."""
        res = self.post("VolumeCreate", {"name": "", "iops": iops, "parent": parent, "size": size,
                                         "template": self.template, "tags": _tags(uuid, vm_uuid, cs_tag, vc_policy)})
        return "~" + str(res["globalId"])

    def volume_copy(self, uuid: str, base_on: str, cs_tag: str, iops: int | None, vm_uuid: str | None,
                    vc_policy: str | None) -> str:
        """A copy of a live volume: `{"baseOn": "~gid", "template": T, "tags": {...}}`, no name."""
        body: dict[str, Any] = {"baseOn": base_on}
        if iops is not None:
            body["iops"] = iops
        body["template"] = self.template
        body["tags"] = _tags(uuid, vm_uuid, cs_tag, vc_policy)
        return "~" + str(self.post("VolumeCreate", body)["globalId"])

    def volume_update(self, name: str, size: int | None, shrink_ok: bool | None, iops: int | None) -> None:
        self.post(f"VolumeUpdate/{name}", {"iops": iops, "size": size, "shrinkOk": shrink_ok})

    def volume_update_iops_and_tags(self, name: str, vm_uuid: str | None, iops: int | None, vc_policy: str | None) -> None:
        self.post(f"VolumeUpdate/{name}", {"iops": iops, "tags": _tags(None, vm_uuid, None, vc_policy)})

    def volume_update_template(self, name: str) -> None:
        self.post(f"VolumeUpdate/{name}", {"template": self.template})

    def volume_snapshot(self, volume: str, uuid: str, vm_uuid: str | None, cs_tag: str, vc_policy: str | None) -> str:
        """`{"name": "", "tags": {...}}`; the snapshot's `~globalId`."""
        res = self.post(f"VolumeSnapshot/{volume}", {"name": "", "tags": _tags(uuid, vm_uuid, cs_tag, vc_policy)})
        return "~" + str(res["snapshotGlobalId"])

    def group_snapshot(self, volumes: list[str], vm_uuid: str, vm_snapshot_uuid: str) -> dict[str, str]:
        """`{"tags": {...}, "volumes": [{"name": "", "volume": "~gid"}, ...]}`; volume gid -> member `~gid`."""
        res = self.post("VolumesGroupSnapshot", {
            "tags": _tags(vm_snapshot_uuid, vm_uuid, "group", None),
            "volumes": [{"name": "", "volume": v} for v in volumes],
        })
        return {str(s["volumeGlobalId"]): "~" + str(s["snapshotGlobalId"]) for s in res["snapshots"]}

    def volume_revert(self, name: str, snapshot: str) -> None:
        self.post(f"VolumeRevert/{name}", {"toSnapshot": snapshot})

    def volume_delete(self, name: str) -> None:
        self.post(f"VolumeDelete/{name}", {"onAttached": "detachForce"})

    def detach_all_forced(self, name: str, snapshot: bool) -> None:
        self.post("VolumesReassign", [{"snapshot" if snapshot else "volume": name, "detach": "all", "force": True}])

    def snapshot_delete(self, name: str) -> None:
        self.detach_all_forced(name, True)
        self.post(f"SnapshotDelete/{name}", None)


@dataclass
class JavaCloud:
    """What `build` made: CloudStack ids and the StorPool `~globalId` of each object."""

    pool_id: str
    """`<SP_TEMPLATE>;<uuid>`, as the Java plugin's LifeCycle.initialize leaves it."""
    template_id: str
    template_cache: str
    vm_id: str
    root_volume: str
    data_volume: str
    snapshot: str
    """CloudStack uuid of a volume snapshot of the data volume (bypassed: StorPool only)."""
    vm_snapshot: str
    orphan_volume: str
    """`~globalId` of a Java-tagged volume CloudStack no longer knows (for `pool adopt` to report)."""
    paths: dict[str, str] = field(default_factory=dict)
    """CloudStack uuid -> the StorPool path CloudStack stores for it."""
    client_ids: dict[str, int] = field(default_factory=dict)
    """host id -> StorPool client id (kept in the host's `parent`)."""
    wire: list[tuple[str, Any]] = field(default_factory=list)
    """Every request body sent, in order."""

    def ref(self, cs_uuid: str) -> str:
        return names.path_to_name(self.paths[cs_uuid])


def build(stack: LocalStack, *, template: str = JAVA_TEMPLATE) -> JavaCloud:
    """Fill `stack` with a cloud the Java plugin built, and register its pool in the pools file
    under the Java pool id (the takeover's first step)."""
    model = stack.cs.model
    wire = JavaWire(stack.sp, template)
    zone = stack.zone_id

    # The pool: CloudStack's id is `<template>;<uuid>`; the URL was the template name alone or
    # the full form; the pools file gets the full form.
    pool_id = f"{template};{uuidlib.uuid4()}"
    model.add_storage_pool(JAVA_POOL_NAME, zone, pool_id=pool_id)
    with open(stack.pools_file, "a") as f:
        f.write(f'\n[[pool]]\nuuid = "{pool_id}"\nname = "{JAVA_POOL_NAME}"\nzone = "{zone}"\n'
                f'url = "{stack.sp.pool_url(template)}"\n')
    stack.ctx.pools = stack.pools()

    # Hosts: the client id in `parent` (StorPoolHostListener), no SP_OURID detail.
    client_ids: dict[str, int] = {}
    for host in model.hosts.values():
        cid = host.details.pop("SP_OURID", None)
        if cid:
            host.parent = cid
            client_ids[host.id] = int(cid)

    # A template the Java plugin cached: volume (cs=template), data copied in, snapshot, delete.
    tpl = model.add_template("java-cached-tmpl", 32 * MiB, zone_id=zone)
    fill = wire.volume_create(tpl.id, None, 32 * MiB, None, None, "template", None)
    stack.sp.write_object(fill, 0, TEMPLATE_MARK)
    cache = wire.volume_snapshot(fill, tpl.id, None, "template", "no")
    wire.volume_delete(fill)

    # A stopped VM with a root volume from that cache and a data disk with an IOPS limit.
    host_id = next(iter(model.hosts))
    vm = model.add_vm("java-vm", template_id=tpl.id, host_id=host_id, state="Stopped", storage_id=pool_id,
                      root_size=32 * MiB)
    root_id = next(v.id for v in model.volumes.values() if v.vm_id == vm.id and v.type == "ROOT")
    data_id = str(uuidlib.uuid4())
    paths: dict[str, str] = {}
    root = wire.volume_create(root_id, cache, 32 * MiB, vm.id, None, "volume", None)
    data = wire.volume_create(data_id, None, 16 * MiB, None, None, "volume", None)
    wire.volume_update_iops_and_tags(data, vm.id, 500, None)  # attached: cvm tag, the offering's iops
    paths[root_id], paths[data_id] = names.name_to_path(root), names.name_to_path(data)
    model.update_volume(root_id, path=paths[root_id])
    model.add_volume("java-data", 16 * MiB, vm_id=vm.id, storage_id=pool_id, device_id=1, path=paths[data_id],
                     volume_id=data_id, max_iops=500)
    stack.sp.write_object(data, 0, b"before-snapshot")

    # A volume snapshot kept on primary only: path in snapshot_details under the snapshot's uuid.
    snap = model.add_snapshot(data_id, "java-snap")
    sref = wire.volume_snapshot(data, snap.id, vm.id, "snapshot", None)
    paths[snap.id] = names.name_to_path(sref)
    snap.details[snap.id] = paths[snap.id]

    # A VM snapshot: one group snapshot of anonymous members; paths per volume in its details.
    vms = model.add_vm_snapshot(vm.id, "java-vmsnap")
    members = wire.group_snapshot([root, data], vm.id, vms.id)
    for vid, ref in ((root_id, root), (data_id, data)):
        vms.details[vid] = names.name_to_path(members[ref.removeprefix("~")])
    stack.sp.write_object(data, 0, b"after--snapshots")

    # A Java-made volume CloudStack no longer has (expunged while the plugin was down).
    orphan = wire.volume_create(str(uuidlib.uuid4()), None, MiB, None, None, "volume", None)
    model.save()
    return JavaCloud(pool_id=pool_id, template_id=tpl.id, template_cache=cache, vm_id=vm.id, root_volume=root_id,
                     data_volume=data_id, snapshot=snap.id, vm_snapshot=vms.id, orphan_volume=orphan,
                     paths=paths, client_ids=client_ids, wire=wire.sent)
