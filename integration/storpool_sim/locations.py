"""Snapshots between StorPool locations: export, the remote side's listing, the copy, unexport.

StorPool copies a snapshot to another location in two steps: the owning location allows a
remote location to read it (`SnapshotExport`), then the remote location makes its own copy
(`SnapshotFromRemote`), which keeps the snapshot's global id and reports `recoveringFromRemote`
while its data arrives. An exported snapshot cannot be deleted until every export is revoked
(`SnapshotUnexport`); revoking needs `force` while a remote copy is still arriving.

Locations are linked in-process (`Emulator.link_location`): the copy reads the exporting
location's object file directly (a reflink when both live on one filesystem, else a sparse
copy), which stands in for StorPool's bridge between locations. `Model.transfer_seconds` says how
long a copy reports `recoveringFromRemote` (0: the data is there at once).

The handlers take the `Model` they run on (under its lock) like its own `q_` methods. The
remote model is read without its lock: an exported snapshot's file is immutable and cannot be
deleted, and its lists are copied before they are walked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from storpool import sptypes as sp

from integration.storpool_sim.model import SpApiError, SpObject, _anonymous, _check_tags, _parse

if TYPE_CHECKING:
    from integration.storpool_sim.model import Model, QueryFn

JSON = Any


def _location(model: Model, name: str) -> Model:
    remote = model.locations.get(name)
    if remote is None:
        raise SpApiError("objectDoesNotExist", f"Location {name} does not exist")
    return remote


def _remote_copy(model: Model, gid: str) -> SpObject | None:
    """This location's copy of a snapshot another location owns (same global id)."""
    o = model.objects.get(gid)
    return o if o is not None and o.snapshot and not o.deleted else None


def q_snapshot_export(model: Model, _a: str | None, body: JSON) -> JSON:
    p = _parse(sp.SnapshotExportDesc, body, "SnapshotExport")
    o = model.lookup(p["snapshot"], "snapshot")
    _location(model, p["location"])
    if o.transient:
        raise SpApiError("invalidParam", f"Snapshot {o.display} is transient and cannot be exported")
    if model.recovering(o):
        raise SpApiError("busy", f"Snapshot {o.display} is still recovering from {o.remote_location}")
    if p["location"] not in o.exported_to:
        o.exported_to = [*o.exported_to, p["location"]]
    return model.ok()


def q_snapshot_unexport(model: Model, _a: str | None, body: JSON) -> JSON:
    p = _parse(sp.SnapshotUnexportDesc, body, "SnapshotUnexport")
    o = model.lookup(p["snapshot"], "snapshot", allow_deleted=True)
    if p.get("all"):
        revoke = list(o.exported_to)
    elif "location" in p:
        if p["location"] not in o.exported_to:
            raise SpApiError("objectDoesNotExist", f"Snapshot {o.display} is not exported to {p['location']}")
        revoke = [p["location"]]
    else:
        raise SpApiError("invalidParam", "SnapshotUnexport: either location or all must be given")
    if not p.get("force"):
        for name in revoke:
            remote = model.locations.get(name)
            copy = _remote_copy(remote, o.gid) if remote is not None else None
            if copy is not None and remote is not None and remote.recovering(copy):
                raise SpApiError("busy", f"Snapshot {o.display} is still recovering in location {name}")
    o.exported_to = [x for x in o.exported_to if x not in revoke]
    return model.ok()


def q_exports_list(model: Model, _a: str | None, _b: JSON) -> JSON:
    return {"exports": [{"snapshot": o.display, "location": loc, "globalId": o.gid}
                        for o in model._sorted(True) for loc in o.exported_to]}


def q_snapshots_remote_list(model: Model, _a: str | None, _b: JSON) -> JSON:
    """The snapshots other locations exported to this one, with this location's copy if any."""
    out = []
    for remote in list(model.locations.values()):
        for o in list(remote.objects.values()):
            if not o.snapshot or o.deleted or model.location_name not in o.exported_to:
                continue
            item: dict[str, JSON] = {"name": o.display, "location": remote.location_name,
                                     "creationTimestamp": o.created, "size": o.size, "remoteId": o.gid,
                                     "tags": dict(o.tags)}
            if o.on_volume:
                item["onVolume"] = o.on_volume
            local = _remote_copy(model, o.gid)
            if local is not None:
                item["localSnapshot"] = local.display
            out.append(item)
    return {"snapshots": out}


def q_snapshot_from_remote(model: Model, _a: str | None, body: JSON) -> JSON:
    p = _parse(sp.SnapshotFromRemoteDesc, _anonymous(body), "SnapshotFromRemote")
    remote = _location(model, p["remoteLocation"])
    gid = p["remoteId"]
    src = remote.objects.get(gid)
    if src is None or not src.snapshot or src.deleted or model.location_name not in src.exported_to:
        raise SpApiError("objectDoesNotExist",
                         f"Snapshot {gid} is not exported from {p['remoteLocation']} to {model.location_name}")
    if gid in model.objects:
        raise SpApiError("objectExists", f"Snapshot ~{gid} already exists")
    name = p.get("name")
    if name is not None:
        model._check_name_free(name)
    tmpl = model._template(p["template"]) if "template" in p else None
    if tmpl is None and "replication" not in p:
        raise SpApiError("invalidParam", "Neither template nor replication specified")
    _check_tags(p.get("tags", {}))
    model._check_space()
    _gid, vid = model._new_gid()
    o = SpObject(gid=gid, vid=vid, name=name, snapshot=True, size=src.size, parent=None, template="",
                 replication=3, place_all="default", place_tail="default", place_head="default",
                 created=src.created, on_volume="-", auto_name=name is None, remote_location=remote.location_name,
                 recovering_until=model.now() + model.transfer_seconds if model.transfer_seconds else None)
    model._apply_policy(o, p, tmpl)
    model._merge_tags(o, p.get("tags"))
    model.dp.copy_in(remote.dp.path(gid), gid)
    model.dp.make_readonly(gid)
    model._adopt(o)
    if name is not None:
        model.by_name[name] = gid
    return model.ok()


def q_snapshot_reconcile(model: Model, a: str | None, _b: JSON) -> JSON:
    """Makes a copied snapshot a multi-cluster object of this location; one cluster per
    location here, so it only checks that the snapshot is there."""
    model.lookup(str(a), "snapshot")
    return model.ok()


QUERIES: dict[str, tuple[str, bool, QueryFn]] = {
    "SnapshotExport": ("POST", False, q_snapshot_export),
    "SnapshotUnexport": ("POST", False, q_snapshot_unexport),
    "SnapshotFromRemote": ("POST", False, q_snapshot_from_remote),
    "SnapshotReconcile": ("POST", True, q_snapshot_reconcile),
    "ExportsList": ("GET", False, q_exports_list),
    "SnapshotsRemoteList": ("GET", False, q_snapshots_remote_list),
}
