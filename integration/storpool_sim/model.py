"""The emulated cluster: objects, templates, attachments, clients, and the rules between them.

The wire (`server.py`) hands every request here as (method, query, argument, body) and gets back
the `data` part of the envelope or an `SpApiError`. Request bodies are validated with the
official bindings' own request types (`storpool.sptypes`), so whatever the bindings would send is
accepted and a field they do not know is refused, as the real API refuses unknown fields.

One lock (`Model.lock`) guards everything, including the data-plane work of a mutation: clones
are reflinks where possible, so holding it is cheap, and it makes name uniqueness and group
snapshots atomic for free.

A change costs the same at 100 objects as at 10,000: objects report their own changes (so a
change is journaled by what it touched, `journal.py`), children and dated snapshots are indexed
rather than searched for, and the raw space used is kept as a running sum. Data changes only
through an attached device, so an object's stored bytes are read when it appears, when its
size or replication changes and when it is detached; objects attached at the time of a
capacity check or a space view are read again then.
"""

from __future__ import annotations

import errno
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from storpool import sptypes as sp
from storpool.spapi import clear_none
from storpool.spcatch import InvalidArgumentError

from integration.storpool_sim.dataplane import DataPlane, DataPlaneError, Exposure
from integration.storpool_sim.journal import StateStore, load_state

log = logging.getLogger(__name__)

JSON = Any

OBJECT_SIZE = 32 * 1024 * 1024
"""StorPool stores data in 32 MiB objects; `objectsCount` is derived from it."""

STATUS = {
    "authError": 401,
    "invalidParam": 400,
    "notAllowed": 403,
    "objectDoesNotExist": 404,
    "objectExists": 409,
    "busy": 409,
    "insufficientResources": 507,
    "unknownQuery": 404,
    "internalError": 500,
}

_VOLUME_NAME = re.compile(sp.VOLUME_NAME_REGEX)
_SNAPSHOT_NAME = re.compile(sp.SNAPSHOT_NAME_REGEX)
_GID = re.compile(r"^[a-z0-9]+\.[a-z0-9]+\.[a-z0-9]+$")


class SpApiError(Exception):
    """An API error as StorPool reports it: a name, a description, maybe transient."""

    def __init__(self, name: str, descr: str, *, transient: bool = False, status: int | None = None) -> None:
        super().__init__(f"{name}: {descr}")
        self.name = name
        self.descr = descr
        self.transient = transient
        self.status = status if status is not None else STATUS.get(name, 400)

    def envelope(self) -> dict[str, JSON]:
        err: dict[str, JSON] = {"name": self.name, "descr": self.descr}
        if self.transient:
            err["transient"] = True
        return {"error": err}


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


@dataclass
class SpObject:
    """A volume or a snapshot (they share one namespace and one id space)."""

    gid: str
    vid: int
    name: str | None
    snapshot: bool
    size: int
    parent: str | None
    template: str
    replication: int
    place_all: str
    place_tail: str
    place_head: str
    iops: int | None = None
    bw: int | None = None
    reuse_server: bool | None = None
    tags: dict[str, str] = field(default_factory=dict)
    created: int = 0
    on_volume: str = ""
    auto_name: bool = False
    bound: bool = False
    deleted: bool = False
    transient: bool = False
    target_delete_date: int | None = None
    created_from: str | None = None
    created_from_vid: int | None = None
    exported_to: list[str] = field(default_factory=list)
    """Remote locations allowed to copy this snapshot (SnapshotExport); reassigned, never mutated
    in place, so that the change is journaled."""
    remote_location: str | None = None
    """The location a snapshot was copied from (SnapshotFromRemote)."""
    recovering_until: int | None = None
    """Until then the copy reports `recoveringFromRemote` (its data still arriving)."""

    def __setattr__(self, name: str, value: Any) -> None:
        # Once the model adopted the object, every change is reported to it (journal, indexes).
        watch = self.__dict__.get("_watch")
        old = self.__dict__.get(name)
        object.__setattr__(self, name, value)
        if watch is not None:
            watch(self, name, old)

    @property
    def display(self) -> str:
        """The name the API shows: `~gid` for anonymous objects, `*name` while being deleted."""
        if self.name is None:
            return f"~{self.gid}"
        return f"*{self.name}" if self.deleted else self.name


@dataclass
class Template:
    name: str
    replication: int | None = 3
    place_all: str = "default"
    place_tail: str = "default"
    place_head: str = "default"
    iops: int | None = None
    bw: int | None = None
    size: int | None = None
    parent: str | None = None
    reuse_server: bool | None = None


@dataclass
class Attachment:
    rights: str
    pos: int
    exposure: Exposure | None = None


@dataclass
class ClientState:
    status: str = "running"
    start_time: int = 0
    active_requests: list[dict[str, JSON]] = field(default_factory=list)


DEFAULT_TEMPLATES: tuple[Template, ...] = (
    Template("ssd", 3, "ssd", "ssd", "ssd"),
    Template("hybrid", 3, "hdd", "ssd", "hdd"),
    Template("hdd", 3, "hdd", "hdd", "hdd"),
)


def _limit(v: JSON) -> int | None:
    """`"-"` and 0 both mean "no limit"; kept as None."""
    if v is None or v == "-" or v == 0:
        return None
    return int(v)


def _show_limit(v: int | None) -> JSON:
    return "-" if v is None else v


def _anonymous(body: JSON) -> JSON:
    """`"name": ""` asks for an anonymous object (addressed by `~globalId` only), as the Java
    plugin creates every volume and snapshot: the same as leaving the name out."""
    if isinstance(body, dict) and body.get("name") == "":
        return {k: v for k, v in body.items() if k != "name"}
    return body


def _parse(spec: Any, body: JSON, what: str) -> dict[str, JSON]:
    """Validate a request body with the bindings' request type; unknown fields are refused.
    A field sent as JSON null is a field not sent (the Java plugin's maps carry nulls)."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise SpApiError("invalidParam", f"{what}: the request body must be a JSON object")
    body = {k: v for k, v in body.items() if v is not None}
    unknown = sorted(set(body) - set(spec.__jsonAttrDefs__))
    if unknown:
        raise SpApiError("invalidParam", f"{what}: unknown field(s) {', '.join(unknown)}")
    try:
        obj = spec(body)
    except InvalidArgumentError as e:
        raise SpApiError("invalidParam", f"{what}: {e}") from None
    parsed: dict[str, JSON] = clear_none(obj.to_json())
    return parsed


def _check_tags(tags: dict[str, str]) -> None:
    for k, v in tags.items():
        try:
            sp.VolumeTagName.handleVal(k)
            sp.VolumeTagValue.handleVal(v)
        except InvalidArgumentError as e:
            raise SpApiError("invalidParam", str(e)) from None


class Model:
    """The emulated StorPool cluster (one cluster; multi-cluster paths map here)."""

    def __init__(
        self,
        dataplane: DataPlane,
        *,
        clients: Iterable[int] = (1, 2, 3),
        templates: Iterable[Template] = DEFAULT_TEMPLATES,
        capacity: int = 1 << 40,
        clock: Callable[[], float] = time.time,
        location_id: str = "lab",
        cluster_id: str = "b",
        cluster_name: str = "sim",
        location_name: str = "lab-location",
        persist: bool = True,
    ) -> None:
        self.dp = dataplane
        self.lock = threading.RLock()
        self.clock = clock
        self.capacity = capacity
        self.location_id = location_id
        self.cluster_id = cluster_id
        self.cluster_name = cluster_name
        self.location_name = location_name
        self.remotes: list[Model] = []
        """The other clusters of the multi-cluster setup (`Emulator.join`), for ClustersList."""
        self.locations: dict[str, Model] = {}
        """Other locations this one is linked to (`Emulator.link_location`), by location name."""
        self.transfer_seconds = 0
        """How long a snapshot copied from a remote location reports `recoveringFromRemote`."""
        self.persist = persist
        self.started = int(clock())
        self.generation = 1
        self.next_vid = 1
        self.objects: dict[str, SpObject] = {}
        self.by_name: dict[str, str] = {}
        self.templates: dict[str, Template] = {t.name: Template(**asdict(t)) for t in templates}
        self.placement_groups: dict[str, set[int]] = {"default": {101, 201, 301}, "ssd": {101, 102}, "hdd": {201, 202}}
        for t in self.templates.values():
            for pg in (t.place_all, t.place_tail, t.place_head):
                self.placement_groups.setdefault(pg, {301, 302})
        self.clients: dict[int, ClientState] = {}
        for c in clients:
            sp.ClientId.handleVal(c)
            self.clients[int(c)] = ClientState(start_time=self.started)
        self.attachments: dict[str, dict[int, Attachment]] = {}
        self.kids: dict[str, set[str]] = {}
        """Parent gid -> the gids of its children."""
        self.dated: set[str] = set()
        """Objects with a `target_delete_date` (what `expire` looks at)."""
        self.raw_used = 0
        """Sum over objects of stored bytes x replication (see `_account`)."""
        self._raw: dict[str, int] = {}
        self._stored: dict[str, int] = {}
        self._touched: set[str] = set()
        self._removed: set[str] = set()
        self.state_file = self.dp.data_dir / "state.json"
        state = load_state(self.dp.data_dir) if persist else None
        if state is not None:
            self._load(state)
        self._store = StateStore(self.dp.data_dir) if persist else None
        if self._store is not None and (state is None or self._store.records):
            self._store.compact(self._state())
        self._touched.clear()
        self._removed.clear()
        self._restore_devices()

    def _adopt(self, o: SpObject) -> None:
        """`o` joins the cluster: indexed, watched, journaled."""
        self.objects[o.gid] = o
        if o.parent:
            self.kids.setdefault(o.parent, set()).add(o.gid)
        if o.target_delete_date is not None:
            self.dated.add(o.gid)
        self._account(o, restat=True)
        self._touched.add(o.gid)
        object.__setattr__(o, "_watch", self._changed)

    def _account(self, o: SpObject, *, restat: bool = False) -> None:
        """Bring `o`'s share of `raw_used` up to date (reading its file when `restat`)."""
        if restat or o.gid not in self._stored:
            parent = o.parent if o.parent in self.objects else None
            self._stored[o.gid] = self.dp.stored_bytes(o.gid, parent)
        share = min(self._stored[o.gid], o.size) * o.replication
        self.raw_used += share - self._raw.get(o.gid, 0)
        self._raw[o.gid] = share

    def _refresh_attached(self) -> None:
        """Attached objects may have been written since: read them again (attachments, not n)."""
        for gid in self.attachments:
            o = self.objects.get(gid)
            if o is not None:
                self._account(o, restat=True)

    def _changed(self, o: SpObject, attr: str, old: Any) -> None:
        self._touched.add(o.gid)
        if attr == "parent":
            if old:
                self.kids.get(old, set()).discard(o.gid)
            if o.parent:
                self.kids.setdefault(o.parent, set()).add(o.gid)
        elif attr == "target_delete_date":
            (self.dated.add if o.target_delete_date is not None else self.dated.discard)(o.gid)
        elif attr in ("size", "replication") and o.gid in self._raw:
            self._account(o, restat=attr == "size")

    # ---- persistence -------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "nextVid": self.next_vid,
            "objects": [asdict(o) for o in self.objects.values()],
            "templates": [asdict(t) for t in self.templates.values()],
            "placementGroups": {k: sorted(v) for k, v in self.placement_groups.items()},
            "attachments": {
                gid: {str(c): {"rights": a.rights, "pos": a.pos} for c, a in per.items()}
                for gid, per in self.attachments.items()
            },
        }

    def _save(self) -> None:
        """Journal what this change touched (the whole state only at compaction)."""
        if self._store is None:
            self._touched.clear()
            self._removed.clear()
            return
        touched = self._touched
        record = {
            "generation": self.generation,
            "nextVid": self.next_vid,
            "put": [asdict(self.objects[g]) for g in sorted(touched) if g in self.objects],
            "del": sorted(g for g in self._removed if g not in self.objects),
            "attachments": {
                g: {str(c): {"rights": a.rights, "pos": a.pos} for c, a in self.attachments.get(g, {}).items()}
                for g in sorted(touched | self._removed)
            },
            "templates": [asdict(t) for t in self.templates.values()],
            "placementGroups": {k: sorted(v) for k, v in self.placement_groups.items()},
        }
        self._touched, self._removed = set(), set()
        self._store.append(record)
        if self._store.due(len(self.objects)):
            self._store.compact(self._state())

    def _load(self, state: dict[str, Any]) -> None:
        self.generation = int(state["generation"])
        self.next_vid = int(state["nextVid"])
        for od in state["objects"]:
            o = SpObject(**od)
            self._adopt(o)
            if o.name is not None and not o.deleted:
                self.by_name[o.name] = o.gid
        self.templates = {td["name"]: Template(**td) for td in state["templates"]}
        self.placement_groups = {k: set(v) for k, v in state["placementGroups"].items()}
        for gid, per in state["attachments"].items():
            for c, a in per.items():
                if int(c) in self.clients and gid in self.objects:
                    self.attachments.setdefault(gid, {})[int(c)] = Attachment(a["rights"], a["pos"])

    def _restore_devices(self) -> None:
        """Attachments are cluster state: after a restart every one gets its device back."""
        for gid, per in self.attachments.items():
            o = self.objects[gid]
            for c, a in per.items():
                a.exposure = self.dp.attach(c, gid, o.name if not o.deleted else None, a.rights == "ro")

    def close(self) -> None:
        """Stop: devices go away (lazily if open), attachment records stay for the next start."""
        with self.lock:
            for gid, per in self.attachments.items():
                o = self.objects.get(gid)
                for c, a in per.items():
                    if a.exposure is not None:
                        self.dp.detach(c, gid, o.name if o else None, a.exposure, force=True)
                        a.exposure = None
            self._save()
            if self._store is not None:
                self._store.compact(self._state())
                self._store.close()
            self.dp.close()

    # ---- helpers -----------------------------------------------------------------------------
    def now(self) -> int:
        return int(self.clock())

    def _bump(self) -> int:
        self.generation += 1
        return self.generation

    def ok(self, **extra: JSON) -> dict[str, JSON]:
        """A mutation's result; also the point where the new state is written to disk."""
        gen = self._bump()
        self._save()
        return {"ok": True, "generation": gen, **extra}

    def _new_gid(self) -> tuple[str, int]:
        vid = self.next_vid
        self.next_vid += 1
        return f"{self.location_id}.{self.cluster_id}.{_b36(vid)}", vid

    def lookup(self, ref: str, kind: str, *, allow_deleted: bool = False) -> SpObject:
        """Resolve a name or `~globalId` to an object of `kind` ("volume", "snapshot" or "any")."""
        if ref.startswith("~"):
            o = self.objects.get(ref[1:])
        else:
            gid = self.by_name.get(ref)
            o = self.objects.get(gid) if gid else None
            if o is None and ref.startswith("*") and allow_deleted:
                o = next((x for x in self.objects.values() if x.deleted and x.display == ref), None)
        if o is not None and o.deleted and not allow_deleted:
            o = None
        if o is None or (kind == "volume" and o.snapshot) or (kind == "snapshot" and not o.snapshot):
            what = {"volume": "Volume", "snapshot": "Snapshot"}.get(kind, "Object")
            raise SpApiError("objectDoesNotExist", f"{what} {ref} does not exist")
        return o

    def children(self, o: SpObject) -> list[SpObject]:
        found = (self.objects.get(g) for g in self.kids.get(o.gid, ()))
        return sorted((x for x in found if x is not None and x.parent == o.gid), key=lambda x: x.vid)

    def _check_name_free(self, name: str) -> None:
        if name in self.by_name:
            raise SpApiError("objectExists", f"{name} already exists")

    def _template(self, name: str) -> Template:
        t = self.templates.get(name)
        if t is None:
            raise SpApiError("objectDoesNotExist", f"Template {name} does not exist")
        return t

    def _pg(self, name: str) -> str:
        if name not in self.placement_groups:
            raise SpApiError("objectDoesNotExist", f"Placement group {name} does not exist")
        return name

    def stored(self, o: SpObject) -> int:
        """`storedSize`: client data written to `o` itself (never more than its size). Read from
        its file on every report (status, space, template status), as StorPool knows its data at
        all times; changes only keep the running sum current (see the module docstring)."""
        self._account(o, restat=True)
        return min(self._stored[o.gid], o.size)

    def space_used(self, o: SpObject) -> int:
        """`spaceUsed`: client data readable through `o`, its parents' included (no replication)."""
        total, seen = 0, set()
        cur: SpObject | None = o
        while cur is not None and cur.gid not in seen:
            seen.add(cur.gid)
            total += self.stored(cur)
            cur = self.objects.get(cur.parent) if cur.parent else None
        return total

    def used_raw(self) -> int:
        self._refresh_attached()
        return self.raw_used

    def _check_space(self) -> None:
        if self.used_raw() >= self.capacity:
            raise SpApiError("insufficientResources", "Not enough free space in the cluster")

    def _apply_policy(self, o: SpObject, p: dict[str, JSON], tmpl: Template | None) -> None:
        """Template first, explicit fields over it: the order StorPool resolves a volume's policy."""
        if tmpl is not None:
            o.template = tmpl.name
            if tmpl.replication is not None:
                o.replication = tmpl.replication
            o.place_all, o.place_tail, o.place_head = tmpl.place_all, tmpl.place_tail, tmpl.place_head
            o.iops, o.bw = tmpl.iops, tmpl.bw
            if tmpl.reuse_server is not None:
                o.reuse_server = tmpl.reuse_server
        self._placement_and_limits(o, p)
        if "reuseServer" in p:
            o.reuse_server = bool(p["reuseServer"])

    def _placement_and_limits(self, target: SpObject | Template, p: dict[str, JSON]) -> None:
        """The explicit policy fields volumes and templates share: placement groups (which must
        exist), replication, iops and bandwidth limits."""
        for key, attr in (("placeAll", "place_all"), ("placeTail", "place_tail"), ("placeHead", "place_head")):
            if key in p:
                setattr(target, attr, self._pg(p[key]))
        if "replication" in p:
            target.replication = int(p["replication"])
        if "iops" in p:
            target.iops = _limit(p["iops"])
        if "bw" in p:
            target.bw = _limit(p["bw"])

    @staticmethod
    def _merge_tags(o: SpObject, tags: dict[str, str] | None) -> None:
        if not tags:
            return
        _check_tags(tags)
        for k, v in tags.items():
            if v == "":
                o.tags.pop(k, None)
            else:
                o.tags[k] = v
        o.tags = o.tags  # in place above: report the change
    def _delete_date(self, p: dict[str, JSON]) -> int | None:
        if "deleteAfter" in p:
            return self.now() + int(p["deleteAfter"])
        if "targetDeleteDate" in p:
            return int(p["targetDeleteDate"]) or None
        return None

    def attached(self, o: SpObject) -> dict[int, Attachment]:
        return self.attachments.get(o.gid, {})

    def _devices(self, o: SpObject) -> list[str]:
        return [a.exposure.device for a in self.attached(o).values() if a.exposure is not None]

    # ---- removal -----------------------------------------------------------------------------
    def _remove(self, o: SpObject) -> None:
        """Drop an object; a deleted or bound parent left without children goes with it."""
        self.dp.remove(o.gid)
        self.objects.pop(o.gid, None)
        self.raw_used -= self._raw.pop(o.gid, 0)
        self._stored.pop(o.gid, None)
        object.__setattr__(o, "_watch", None)
        if o.parent:
            self.kids.get(o.parent, set()).discard(o.gid)
        self.kids.pop(o.gid, None)
        self.dated.discard(o.gid)
        self._removed.add(o.gid)
        if o.name is not None and self.by_name.get(o.name) == o.gid:
            del self.by_name[o.name]
        self.attachments.pop(o.gid, None)
        parent = self.objects.get(o.parent) if o.parent else None
        if parent is not None:
            self._collect(parent)

    def _collect(self, o: SpObject) -> None:
        if (o.deleted or o.bound) and not self.children(o) and not self.attached(o):
            self._remove(o)

    def _delete_snapshot(self, o: SpObject) -> None:
        """Real StorPool keeps a deleted snapshot that still has children until the last goes."""
        if self.children(o):
            o.deleted = True
            if o.name is not None and self.by_name.get(o.name) == o.gid:
                del self.by_name[o.name]
        else:
            self._remove(o)

    def expire(self) -> None:
        """Delete snapshots whose `targetDeleteDate` has passed (attached ones wait)."""
        now = self.now()
        dated = (self.objects.get(g) for g in sorted(self.dated))
        due = [
            o
            for o in dated
            if o is not None and o.snapshot and not o.deleted and o.target_delete_date is not None
            and o.target_delete_date <= now and not self.attached(o)
        ]
        if not due:
            return
        for o in due:
            if o.gid in self.objects:
                self._delete_snapshot(o)
        self._bump()
        self._save()

    # ---- views -------------------------------------------------------------------------------
    def _objects_of(self, o: SpObject) -> list[list[int]]:
        n = max(1, -(-o.size // OBJECT_SIZE))
        return [[(r + 1) * 100 + 1 + (i % 2) for r in range(o.replication)] for i in range(n)]

    def summary(self, o: SpObject) -> dict[str, JSON]:
        parent = self.objects.get(o.parent) if o.parent else None
        d: dict[str, JSON] = {
            "name": o.display,
            "parentName": parent.display if parent else "",
            "templateName": o.template,
            "size": o.size,
            "replication": o.replication,
            "globalId": o.gid,
            "placeAll": o.place_all,
            "placeTail": o.place_tail,
            "placeHead": o.place_head,
            "visibleVolumeId": o.vid,
            "parentVolumeId": parent.vid if parent else 0,
            "objectsCount": max(1, -(-o.size // OBJECT_SIZE)),
            "creationTimestamp": o.created,
            "tags": dict(o.tags),
            "clusterName": self.cluster_name,
            "clusterId": f"{self.location_id}.{self.cluster_id}",
            "iops": _show_limit(o.iops),
            "bw": _show_limit(o.bw),
        }
        if o.reuse_server is not None:
            d["reuseServer"] = o.reuse_server
        if o.snapshot:
            d.update(
                onVolume=o.on_volume,
                autoName=o.auto_name,
                bound=o.bound,
                deleted=o.deleted,
                transient=o.transient,
                recoveringFromRemote=self.recovering(o),
            )
            if o.target_delete_date is not None:
                d["targetDeleteDate"] = o.target_delete_date
            if o.created_from is not None:
                d["createdFromGlobalId"] = o.created_from
                d["createdFromVisibleVolumeId"] = o.created_from_vid
        return d

    def recovering(self, o: SpObject) -> bool:
        """A snapshot copied from a remote location whose data is still arriving."""
        return o.recovering_until is not None and self.now() < o.recovering_until

    def describe(self, o: SpObject) -> dict[str, JSON]:
        d = self.summary(o)
        objs = self._objects_of(o)
        d["objects"] = objs
        d["targetDiskSets"] = [list(s) for s in sorted({tuple(x) for x in objs})]
        return d

    def info(self, o: SpObject) -> dict[str, JSON]:
        d = self.summary(o)
        objs = self._objects_of(o)
        per_disk: dict[int, int] = {}
        per_set: dict[tuple[int, ...], int] = {}
        for x in objs:
            for disk in x:
                per_disk[disk] = per_disk.get(disk, 0) + 1
            per_set[tuple(x)] = per_set.get(tuple(x), 0) + 1
        chains = [{"disks": list(k), "count": v} for k, v in sorted(per_set.items())]
        d.update(disksCount=len(per_disk), objectsPerDisk=per_disk, objectsPerChain=chains, objectsPerDiskSet=chains)
        return d

    def status(self, o: SpObject) -> dict[str, JSON]:
        d = self.summary(o)
        stored = self.stored(o)
        d.update(
            status="up",
            snapshot=o.snapshot,
            migrating=False,
            decreasedRedundancy=False,
            balancerBlocked=False,
            syncingDataBytes=0,
            syncingMetaObjects=0,
            downBytes=0,
            objectsCount=d["objectsCount"],
            upSoonChainsCount=0,
            downDrives=[],
            missingDrives=[],
            missingTargetDrives=[],
            softEjectingDrives=[],
            storedSize=stored,
            onDiskSize=stored * o.replication,
        )
        return d

    def space(self, o: SpObject) -> dict[str, JSON]:
        d = self.summary(o)
        stored = self.stored(o)
        d.update(storedSize=stored, spaceUsed=self.space_used(o))
        return d

    def _attachment_name(self, o: SpObject) -> str:
        """AttachmentDesc.volume must match the *volume* name rule; `vol@3` does not, so `~gid`."""
        return o.display if _VOLUME_NAME.match(o.display) or o.display.startswith("~") else f"~{o.gid}"

    def template_desc(self, t: Template) -> dict[str, JSON]:
        return {
            "name": t.name,
            "parentName": t.parent or "",
            "placeAll": t.place_all,
            "placeTail": t.place_tail,
            "placeHead": t.place_head,
            "size": t.size if t.size is not None else "-",
            "replication": t.replication if t.replication is not None else "-",
            "iops": _show_limit(t.iops),
            "bw": _show_limit(t.bw),
        }

    def template_status(self, t: Template) -> dict[str, JSON]:
        mine = [o for o in self.objects.values() if o.template == t.name]
        vols = [o for o in mine if not o.snapshot]
        snaps = [o for o in mine if o.snapshot]
        stored = sum(self.stored(o) for o in mine)
        on_disk = sum(self.stored(o) * o.replication for o in mine)
        rep = t.replication or 3
        free_raw = max(0, self.capacity - self.used_raw())
        with_children = [o for o in snaps if self.children(o)]
        est = {"free": free_raw // rep, "capacity": self.capacity // rep}
        return {
            "name": t.name,
            "placeAll": t.place_all,
            "placeTail": t.place_tail,
            "placeHead": t.place_head,
            "replication": t.replication if t.replication is not None else "-",
            "volumesCount": len(vols),
            "snapshotsCount": len(snaps),
            "removingSnapshotsCount": sum(1 for o in snaps if o.deleted),
            "size": sum(o.size for o in vols),
            "totalSize": sum(o.size * o.replication for o in vols),
            "volumesSize": sum(o.size for o in vols),
            "snapshotsWithChildrenSize": sum(o.size for o in with_children),
            "snapshotsWithoutChildrenSize": sum(o.size for o in snaps if o not in with_children),
            "onDiskSize": on_disk,
            "storedSize": stored,
            "availablePlaceAll": free_raw,
            "availablePlaceTail": free_raw,
            "availablePlaceHead": free_raw,
            "capacityPlaceAll": self.capacity,
            "capacityPlaceTail": self.capacity,
            "capacityPlaceHead": self.capacity,
            "stored": {**est, "placeAll": dict(est), "placeTail": dict(est), "placeHead": dict(est)},
        }

    # ---- dispatch ----------------------------------------------------------------------------
    def handle(self, method: str, query: str, arg: str | None, body: JSON) -> JSON:
        """Run one API query under the model lock; returns the envelope's `data`."""
        entry = QUERIES.get(query)
        if entry is None:
            raise SpApiError("unknownQuery", f"Unknown query {query}")
        want, needs_arg, fn = entry
        if method != want:
            raise SpApiError("invalidParam", f"{query} must be called with {want}", status=405)
        if needs_arg and not arg:
            raise SpApiError("invalidParam", f"{query} needs an argument in the path")
        if not needs_arg and arg:
            raise SpApiError("unknownQuery", f"Unknown query {query}/{arg}")
        with self.lock:
            self.expire()
            try:
                return fn(self, arg, body)
            except DataPlaneError as e:
                raise SpApiError("internalError", str(e)) from None
            except OSError as e:
                # The emulated cluster ran out of room (or the file system cannot hold a volume
                # that large): StorPool's own answer for that is insufficientResources.
                if e.errno in (errno.EFBIG, errno.ENOSPC, errno.EDQUOT):
                    raise SpApiError("insufficientResources", f"cannot allocate: {e.strerror}") from None
                raise

    # ---- reads -------------------------------------------------------------------------------
    def q_volumes_list(self, _a: str | None, _b: JSON) -> JSON:
        return [self.summary(o) for o in self._sorted(False)]

    def q_snapshots_list(self, _a: str | None, _b: JSON) -> JSON:
        return [self.summary(o) for o in self._sorted(True)]

    def _sorted(self, snapshots: bool) -> list[SpObject]:
        return sorted((o for o in self.objects.values() if o.snapshot == snapshots), key=lambda o: o.vid)

    def q_volume(self, a: str | None, _b: JSON) -> JSON:
        return [self.summary(self.lookup(str(a), "volume"))]

    def q_volume_describe(self, a: str | None, _b: JSON) -> JSON:
        return self.describe(self.lookup(str(a), "volume"))

    def q_volume_info(self, a: str | None, _b: JSON) -> JSON:
        return self.info(self.lookup(str(a), "volume"))

    def q_snapshot(self, a: str | None, _b: JSON) -> JSON:
        return [self.summary(self.lookup(str(a), "snapshot", allow_deleted=True))]

    def q_snapshot_describe(self, a: str | None, _b: JSON) -> JSON:
        return self.describe(self.lookup(str(a), "snapshot", allow_deleted=True))

    def q_snapshot_info(self, a: str | None, _b: JSON) -> JSON:
        return self.info(self.lookup(str(a), "snapshot", allow_deleted=True))

    def q_volume_list_snapshots(self, a: str | None, _b: JSON) -> JSON:
        o = self.lookup(str(a), "volume")
        chain = []
        p = self.objects.get(o.parent) if o.parent else None
        while p is not None:
            chain.append(self.summary(p))
            p = self.objects.get(p.parent) if p.parent else None
        return chain

    def q_volumes_space(self, _a: str | None, _b: JSON) -> JSON:
        self._refresh_attached()
        return [self.space(o) for o in self._sorted(False)]

    def q_snapshots_space(self, _a: str | None, _b: JSON) -> JSON:
        self._refresh_attached()
        return [self.space(o) for o in self._sorted(True)]

    def q_volumes_status(self, _a: str | None, _b: JSON) -> JSON:
        self._refresh_attached()
        return {o.display: self.status(o) for o in sorted(self.objects.values(), key=lambda o: o.vid)}

    def q_attachments(self, _a: str | None, _b: JSON) -> JSON:
        out = []
        for gid, per in sorted(self.attachments.items()):
            o = self.objects[gid]
            for c, a in sorted(per.items()):
                out.append(
                    {
                        "volume": self._attachment_name(o),
                        "snapshot": o.snapshot,
                        "client": c,
                        "rights": a.rights,
                        "pos": a.pos,
                        "globalId": o.gid,
                    }
                )
        return out

    def q_templates_list(self, _a: str | None, _b: JSON) -> JSON:
        return [self.template_desc(t) for t in sorted(self.templates.values(), key=lambda t: t.name)]

    def q_template_describe(self, a: str | None, _b: JSON) -> JSON:
        return self.template_desc(self._template(str(a)))

    def q_clusters_list(self, _a: str | None, _b: JSON) -> JSON:
        """The registered remote clusters: sub-cluster id, location name and cluster name."""
        return {"clusters": [{"id": m.cluster_id, "location": m.location_name, "name": m.cluster_name}
                             for m in self.remotes]}

    def q_locations_list(self, _a: str | None, _b: JSON) -> JSON:
        """The registered remote locations (the local one is not among them)."""
        seen: dict[str, JSON] = {}
        for m in self.remotes:
            if m.location_id != self.location_id:
                seen[m.location_id] = {"id": m.location_id, "name": m.location_name,
                                       "sendBufferSize": 0, "recvBufferSize": 0}
        for loc in self.linked_locations():
            seen.setdefault(loc["id"], loc)
        return {"locations": list(seen.values())}

    def linked_locations(self) -> list[JSON]:
        """LocationsList entries of the locations linked to this one."""
        return [{"id": m.location_id, "name": m.location_name, "sendBufferSize": 0, "recvBufferSize": 0}
                for m in self.locations.values()]

    def q_templates_status(self, _a: str | None, _b: JSON) -> JSON:
        self._refresh_attached()
        return [self.template_status(t) for t in sorted(self.templates.values(), key=lambda t: t.name)]

    def q_placement_groups(self, _a: str | None, _b: JSON) -> JSON:
        return {n: {"id": i + 1, "name": n, "disks": sorted(d)} for i, (n, d) in enumerate(sorted(self.placement_groups.items()))}

    def q_placement_group(self, a: str | None, b: JSON) -> JSON:
        pgs = self.q_placement_groups(None, b)
        if a not in pgs:
            raise SpApiError("objectDoesNotExist", f"Placement group {a} does not exist")
        return pgs[a]

    def _service(self, sid: int, status: str, **extra: JSON) -> dict[str, JSON]:
        return {"id": sid, "nodeId": min(sid, sp.MAX_NODE_ID), "status": status, "version": "21.0.0.sim",
                "startTime": self.started, **extra}

    def q_services(self, _a: str | None, _b: JSON) -> JSON:
        clients = {}
        for c, st in sorted(self.clients.items()):
            clients[str(c)] = self._service(c, st.status, startTime=st.start_time if st.status == "running" else None)
        return {
            "clusterStatus": "running",
            "mgmt": {"1": self._service(1, "running", active=True, prio=0)},
            "servers": {str(s): self._service(s, "running", missingDisks=[], pendingDisks=[]) for s in (1, 2, 3)},
            "clients": clients,
            "bridges": {},
            "iscsiTargets": {},
        }

    def _client_config(self, c: int) -> dict[str, JSON]:
        st = self.clients[c]
        up = st.status == "running"
        return {"id": c, "generation": self.generation, "clientGeneration": self.generation if up else 0,
                "configStatus": "ok" if up else "down", "delay": 0}

    def q_clients_config(self, _a: str | None, _b: JSON) -> JSON:
        return [self._client_config(c) for c in sorted(self.clients)]

    def _client(self, a: str | None) -> int:
        try:
            c = int(str(a))
        except ValueError:
            raise SpApiError("invalidParam", f"Invalid client id {a}") from None
        if c not in self.clients:
            raise SpApiError("objectDoesNotExist", f"Client {c} does not exist")
        return c

    def q_client_config_wait(self, a: str | None, _b: JSON) -> JSON:
        c = self._client(a)
        if self.clients[c].status != "running":
            raise SpApiError("busy", f"Client {c} is not running", transient=True)
        return [self._client_config(c)]

    def q_client_active_requests(self, a: str | None, _b: JSON) -> JSON:
        c = self._client(a)
        # A client that the cluster lists as down but whose I/O is still in flight (a storage
        # network split seen only by the management) answers with its requests; one with none
        # cannot be asked at all.
        if self.clients[c].status != "running" and not self.clients[c].active_requests:
            raise SpApiError("busy", f"Client {c} is not running; cannot get its active requests")
        return {"clientId": c, "requests": [dict(r) for r in self.clients[c].active_requests]}

    # ---- volume mutations ---------------------------------------------------------------------
    def q_volume_create(self, _a: str | None, body: JSON) -> JSON:
        p = _parse(sp.VolumeCreateDesc, _anonymous(body), "VolumeCreate")
        name: str | None = p.get("name")
        if name is not None:
            self._check_name_free(name)
        if "parent" in p and "baseOn" in p:
            raise SpApiError("invalidParam", "parent and baseOn are mutually exclusive")
        tmpl = self._template(p["template"]) if "template" in p else None
        parent = self.lookup(p["parent"], "snapshot") if "parent" in p else None
        base = self.lookup(p["baseOn"], "volume") if "baseOn" in p else None
        source = parent or base
        if tmpl is None and "replication" not in p and source is None:
            raise SpApiError("invalidParam", "Neither template nor replication specified")
        size = p.get("size") or (tmpl.size if tmpl else None) or (source.size if source else None)
        if size is None:
            raise SpApiError("invalidParam", "Volume size not specified")
        if source is not None and size < source.size:
            raise SpApiError("invalidParam", f"Size {size} is smaller than the parent's size {source.size}")
        _check_tags(p.get("tags", {}))
        self._check_space()
        gid, vid = self._new_gid()
        o = SpObject(gid=gid, vid=vid, name=name, snapshot=False, size=size, parent=None, template="",
                     replication=3, place_all="default", place_tail="default", place_head="default",
                     created=self.now())
        if source is not None:
            o.template, o.replication = source.template, source.replication
            o.place_all, o.place_tail, o.place_head = source.place_all, source.place_tail, source.place_head
            o.iops, o.bw = source.iops, source.bw
        self._apply_policy(o, p, tmpl)
        self._merge_tags(o, p.get("tags"))
        extra: dict[str, JSON] = {}
        if base is not None:
            snap = self._snapshot(base, None, {}, bound=True, transient=True)
            extra["autoName"] = snap.display
            parent = snap
        if parent is not None:
            self.dp.clone(parent.gid, gid, size)
            o.parent = parent.gid
        else:
            self.dp.create(gid, size)
        self._adopt(o)
        if name is not None:
            self.by_name[name] = gid
        return self.ok(name=o.display, globalId=gid, **extra)

    def _snapshot(self, vol: SpObject, name: str | None, p: dict[str, JSON], *, bound: bool = False,
                  transient: bool = False) -> SpObject:
        """Freeze the volume's content as a new snapshot that becomes the volume's parent."""
        gid, vid = self._new_gid()
        auto = name is None
        if auto and vol.name is not None:
            candidate = f"{vol.name.lstrip('#')}@{vid}"
            name = candidate if _SNAPSHOT_NAME.match(candidate) and candidate not in self.by_name else None
        s = SpObject(gid=gid, vid=vid, name=name, snapshot=True, size=vol.size, parent=vol.parent,
                     template=vol.template, replication=vol.replication, place_all=vol.place_all,
                     place_tail=vol.place_tail, place_head=vol.place_head, iops=vol.iops, bw=vol.bw,
                     reuse_server=vol.reuse_server, created=self.now(), on_volume=vol.display, auto_name=auto,
                     bound=bound or bool(p.get("bind", False)), transient=transient,
                     target_delete_date=self._delete_date(p), created_from=vol.gid, created_from_vid=vol.vid)
        self._merge_tags(s, p.get("tags"))
        self.dp.clone(vol.gid, gid)
        self.dp.make_readonly(gid)
        self._adopt(s)
        if name is not None:
            self.by_name[name] = gid
        vol.parent = gid
        return s

    def q_volume_snapshot(self, a: str | None, body: JSON) -> JSON:
        p = _parse(sp.VolumeSnapshotDesc, _anonymous(body), "VolumeSnapshot")
        vol = self.lookup(str(a), "volume")
        name = p.get("name")
        if name is not None:
            self._check_name_free(name)
        _check_tags(p.get("tags", {}))
        s = self._snapshot(vol, name, p)
        extra: dict[str, JSON] = {"snapshotGlobalId": s.gid, "snapshotVisibleVolumeId": s.vid}
        if s.auto_name:
            extra["autoName"] = s.display
        return self.ok(**extra)

    def q_group_snapshot(self, _a: str | None, body: JSON) -> JSON:
        if isinstance(body, dict) and isinstance(body.get("volumes"), list):
            body = {**body, "volumes": [_anonymous(v) for v in body["volumes"]]}
        p = _parse(sp.GroupSnapshotsSpec, body, "VolumesGroupSnapshot")
        specs = p.get("volumes", [])
        if not specs:
            raise SpApiError("invalidParam", "No volumes given")
        vols = [self.lookup(s["volume"], "volume") for s in specs]
        if len({v.gid for v in vols}) != len(vols):
            raise SpApiError("invalidParam", "A volume is listed more than once")
        names = [s.get("name") for s in specs if s.get("name") is not None]
        if len(set(names)) != len(names):
            raise SpApiError("invalidParam", "A snapshot name is given more than once")
        for n in names:
            self._check_name_free(n)
        common = p.get("tags") or {}
        _check_tags(common)
        for s in specs:
            _check_tags(s.get("tags") or {})
        out = []
        for v, spec in zip(vols, specs, strict=True):
            snap = self._snapshot(v, spec.get("name"), {"tags": {**common, **(spec.get("tags") or {})}})
            out.append({"volume": v.display, "volumeGlobalId": v.gid, "snapshot": snap.display,
                        "snapshotGlobalId": snap.gid, "remoteId": snap.gid})
        return self.ok(snapshots=out)

    def q_volume_update(self, a: str | None, body: JSON) -> JSON:
        p = _parse(sp.VolumeUpdateDesc, body, "VolumeUpdate")
        o = self.lookup(str(a), "volume")
        return self._update(o, p)

    def q_snapshot_update(self, a: str | None, body: JSON) -> JSON:
        p = _parse(sp.SnapshotUpdateDesc, body, "SnapshotUpdate")
        o = self.lookup(str(a), "snapshot")
        res = self._update(o, p)
        res["clusterId"] = f"{self.location_id}.{self.cluster_id}"
        return res

    def _update(self, o: SpObject, p: dict[str, JSON]) -> dict[str, JSON]:
        """Validate everything, then change: a refused update changes nothing."""
        rename = p.get("rename")
        if rename is not None and rename != o.name:
            self._check_name_free(rename)
            if o.snapshot and not _SNAPSHOT_NAME.match(rename):
                raise SpApiError("invalidParam", f"Invalid snapshot name {rename}")
        tmpl = self._template(p["template"]) if "template" in p else None
        for key in ("placeAll", "placeTail", "placeHead"):
            if key in p:
                self._pg(p[key])
        _check_tags(p.get("tags") or {})
        new_size = o.size
        if "size" in p:
            new_size = int(p["size"])
        elif "sizeAdd" in p:
            new_size = o.size + int(p["sizeAdd"])
        if new_size < o.size and not p.get("shrinkOk", False):
            raise SpApiError("invalidParam", f"Shrinking {o.display} from {o.size} to {new_size} needs shrinkOk")
        if new_size > o.size:
            self._check_space()
        # -- apply --
        if rename is not None and rename != o.name:
            for c in self.attached(o):
                self.dp.unlink_name(c, o.name)
            if o.name is not None:
                self.by_name.pop(o.name, None)
            o.name = rename
            self.by_name[rename] = o.gid
            for c, att in self.attached(o).items():
                if att.exposure is not None:
                    self.dp.link(c, o.gid, rename, att.exposure.device)
        self._apply_policy(o, p, tmpl)
        self._merge_tags(o, p.get("tags"))
        if new_size != o.size:
            self.dp.resize(o.gid, new_size, self._devices(o))
            o.size = new_size
        if o.snapshot:
            if "bind" in p:
                o.bound = bool(p["bind"])
            date = self._delete_date(p)
            if date is not None or "targetDeleteDate" in p:
                o.target_delete_date = date
        return self.ok()

    def _detach_all(self, o: SpObject, force: bool) -> None:
        per = self.attached(o)
        if not force:
            for c, att in per.items():
                if att.exposure is not None and self.dp.holders(att.exposure):
                    raise SpApiError("invalidParam", f"{o.display} is open at client {c}")
        for c, att in list(per.items()):
            if att.exposure is not None:
                self.dp.detach(c, o.gid, o.name, att.exposure, force=True)
        self.attachments.pop(o.gid, None)
        self._touched.add(o.gid)
        self._account(o, restat=True)

    def q_volume_delete(self, a: str | None, body: JSON) -> JSON:
        if body is None:
            body = {}
        if not isinstance(body, dict) or set(body) - {"onAttached"}:
            raise SpApiError("invalidParam", "VolumeDelete: only onAttached may be given")
        on_attached = body.get("onAttached", "fail")
        try:
            sp.OnAttached.handleVal(on_attached)
        except InvalidArgumentError as e:
            raise SpApiError("invalidParam", str(e)) from None
        o = self.lookup(str(a), "volume")
        if self.attached(o):
            if on_attached not in ("detach", "detachForce"):
                clients = ", ".join(map(str, sorted(self.attached(o))))
                raise SpApiError("busy", f"Volume {o.display} is attached to client(s) {clients}")
            self._detach_all(o, force=on_attached == "detachForce")
        self._remove(o)
        return self.ok()

    def q_snapshot_delete(self, a: str | None, _b: JSON) -> JSON:
        return self._snapshot_delete(self.lookup(str(a), "snapshot"))

    def q_snapshot_delete_by_id(self, a: str | None, _b: JSON) -> JSON:
        if not _GID.match(str(a)):
            raise SpApiError("invalidParam", f"Invalid global id {a}")
        return self._snapshot_delete(self.lookup(f"~{a}", "snapshot"))

    def _snapshot_delete(self, o: SpObject) -> JSON:
        if o.exported_to:
            raise SpApiError("invalidParam", f"Snapshot {o.display} is still exported to {', '.join(o.exported_to)}")
        if self.attached(o):
            clients = ", ".join(map(str, sorted(self.attached(o))))
            raise SpApiError("busy", f"Snapshot {o.display} is attached to client(s) {clients}")
        self._delete_snapshot(o)
        return self.ok()

    def q_volume_revert(self, a: str | None, body: JSON) -> JSON:
        p = _parse(sp.VolumeRevertDesc, body, "VolumeRevert")
        o = self.lookup(str(a), "volume")
        snap = self.lookup(p["toSnapshot"], "snapshot")
        if self.attached(o):
            raise SpApiError("busy", f"Volume {o.display} is attached; detach it before reverting")
        chain = set()
        q = self.objects.get(o.parent) if o.parent else None
        while q is not None:
            chain.add(q.gid)
            q = self.objects.get(q.parent) if q.parent else None
        if snap.gid not in chain and snap.created_from != o.gid:
            raise SpApiError("invalidParam", f"Snapshot {snap.display} is not a snapshot of {o.display}")
        self.dp.replace_content(snap.gid, o.gid, snap.size)
        old_parent = self.objects.get(o.parent) if o.parent else None
        o.size = snap.size
        o.parent = snap.gid
        if old_parent is not None and old_parent.gid != snap.gid:
            self._collect(old_parent)
        return self.ok()

    def q_volume_freeze(self, a: str | None, body: JSON) -> JSON:
        p = _parse(sp.VolumeFreezeDesc, body, "VolumeFreeze")
        o = self.lookup(str(a), "volume")
        if self.attached(o):
            raise SpApiError("busy", f"Volume {o.display} is attached")
        o.snapshot = True
        o.on_volume = o.display
        self.dp.make_readonly(o.gid)
        o.target_delete_date = self._delete_date(p)
        return self.ok()

    # ---- attachments --------------------------------------------------------------------------
    def _parse_reassign(self, items: JSON) -> list[tuple[SpObject, dict[str, JSON]]]:
        if not isinstance(items, list):
            raise SpApiError("invalidParam", "VolumesReassign: expected a list")
        plan = []
        for item in items:
            if isinstance(item, dict) and "snapshot" in item:
                if "rw" in item:
                    raise SpApiError("invalidParam", "Snapshots can only be attached read-only")
                p = _parse(sp.SnapshotReassignDesc, item, "VolumesReassign")
                o = self.lookup(p["snapshot"], "snapshot")
                if o.transient and p.get("ro"):
                    raise SpApiError("notAllowed", f"Transient snapshot {o.display} cannot be attached")
            else:
                p = _parse(sp.VolumeReassignDesc, item, "VolumesReassign")
                o = self.lookup(p["volume"], "volume")
            for c in list(p.get("rw", [])) + list(p.get("ro", [])):
                if c not in self.clients:
                    raise SpApiError("invalidParam", f"Client {c} does not exist")
            if set(p.get("rw", [])) & set(p.get("ro", [])):
                raise SpApiError("invalidParam", "A client is given both rw and ro")
            plan.append((o, p))
        return plan

    def _reassign(self, items: JSON) -> set[int]:
        """Validate every item and every open-device check first, then apply them all."""
        plan = self._parse_reassign(items)
        changes: list[tuple[SpObject, int, str | None, bool]] = []  # (obj, client, new rights|None, force)
        for o, p in plan:
            cur = self.attached(o)
            force = bool(p.get("force", False))
            det = p.get("detach")
            det_clients = set(cur) if det == "all" else set(det or [])
            for c in sorted(det_clients & set(cur)):
                changes.append((o, c, None, force))
            for rights in ("rw", "ro"):
                for c in p.get(rights, []):
                    if c in det_clients:
                        continue
                    if c not in cur or cur[c].rights != rights:
                        changes.append((o, c, rights, force))
        for o, c, _rights, force in changes:
            att = self.attached(o).get(c)
            if att is not None and att.exposure is not None and not force and self.dp.holders(att.exposure):
                raise SpApiError("invalidParam", f"{o.display} is open at client {c}")
        touched = set()
        for o, c, new_rights, _force in changes:
            touched.add(c)
            self._touched.add(o.gid)
            per = self.attachments.setdefault(o.gid, {})
            att = per.pop(c, None)
            if att is not None and att.exposure is not None:
                self.dp.detach(c, o.gid, o.name, att.exposure, force=True)
            if new_rights is not None:
                used = {a.pos for x in self.attachments.values() for cc, a in x.items() if cc == c}
                pos = next(i for i in range(sp.MAX_CLIENT_DISKS) if i not in used)
                exp = self.dp.attach(c, o.gid, o.name, readonly=new_rights == "ro")
                per[c] = Attachment(new_rights, pos, exp)
            if not per:
                self.attachments.pop(o.gid, None)
            self._account(o, restat=True)
        for o, _p in plan:
            if o.gid in self.objects:
                self._collect(o)
        return touched

    def q_reassign(self, _a: str | None, body: JSON) -> JSON:
        self._reassign(body)
        return self.ok()

    def q_reassign_wait(self, _a: str | None, body: JSON) -> JSON:
        p = body if isinstance(body, dict) else {}
        unknown = set(p) - {"reassign", "attachTimeout"}
        if unknown or "reassign" not in p:
            raise SpApiError("invalidParam", "VolumesReassignWait: expected {reassign, attachTimeout?}")
        touched = self._reassign(p["reassign"])
        res = self.ok()
        down = sorted(c for c in touched if self.clients[c].status != "running")
        if down:
            raise SpApiError("busy", f"Client(s) {', '.join(map(str, down))} did not apply the change in time")
        return res

    # ---- templates ----------------------------------------------------------------------------
    def q_template_create(self, _a: str | None, body: JSON) -> JSON:
        p = _parse(sp.VolumeTemplateCreateDesc, body, "VolumeTemplateCreate")
        if p["name"] in self.templates:
            raise SpApiError("objectExists", f"Template {p['name']} already exists")
        t = Template(p["name"], replication=p.get("replication"))
        self._template_fields(t, p)
        self.templates[t.name] = t
        return self.ok()

    def _template_fields(self, t: Template, p: dict[str, JSON]) -> None:
        self._placement_and_limits(t, p)
        if "size" in p:
            t.size = int(p["size"])
        if "parent" in p:
            t.parent = self.lookup(p["parent"], "snapshot").display
        if "reuseServer" in p:
            t.reuse_server = bool(p["reuseServer"])

    def q_template_update(self, a: str | None, body: JSON) -> JSON:
        p = _parse(sp.VolumeTemplateUpdateDesc, body, "VolumeTemplateUpdate")
        t = self._template(str(a))
        if "rename" in p and p["rename"] != t.name:
            if p["rename"] in self.templates:
                raise SpApiError("objectExists", f"Template {p['rename']} already exists")
            del self.templates[t.name]
            for o in self.objects.values():
                if o.template == t.name:
                    o.template = p["rename"]
            t.name = p["rename"]
            self.templates[t.name] = t
        self._template_fields(t, p)
        if p.get("propagate"):
            for o in self.objects.values():
                if o.template == t.name:
                    self._apply_policy(o, {}, t)
        return self.ok()

    def q_template_delete(self, a: str | None, _b: JSON) -> JSON:
        t = self._template(str(a))
        if any(o.template == t.name for o in self.objects.values()):
            raise SpApiError("busy", f"Template {t.name} is in use")
        del self.templates[t.name]
        return self.ok()

    # ---- runtime knobs (fault injection) --------------------------------------------------------
    def set_client_status(self, client: int, status: str) -> None:
        sp.ClientStatus.handleVal(status)
        with self.lock:
            st = self.clients[client]
            if st.status != status and status == "running":
                st.start_time = self.now()
            st.status = status
            self._bump()

    def set_active_requests(self, client: int, requests: list[dict[str, JSON]]) -> None:
        checked = [clear_none(sp.ActiveRequestDesc(r).to_json()) for r in requests]
        with self.lock:
            self.clients[client].active_requests = checked


QueryFn = Callable[[Model, str | None, JSON], JSON]

QUERIES: dict[str, tuple[str, bool, QueryFn]] = {
    "VolumesList": ("GET", False, Model.q_volumes_list),
    "SnapshotsList": ("GET", False, Model.q_snapshots_list),
    "Volume": ("GET", True, Model.q_volume),
    "VolumeDescribe": ("GET", True, Model.q_volume_describe),
    "VolumeGetInfo": ("GET", True, Model.q_volume_info),
    "Snapshot": ("GET", True, Model.q_snapshot),
    "SnapshotDescribe": ("GET", True, Model.q_snapshot_describe),
    "SnapshotGetInfo": ("GET", True, Model.q_snapshot_info),
    "VolumeListSnapshots": ("GET", True, Model.q_volume_list_snapshots),
    "VolumesSpace": ("GET", False, Model.q_volumes_space),
    "SnapshotsSpace": ("GET", False, Model.q_snapshots_space),
    "VolumesGetStatus": ("GET", False, Model.q_volumes_status),
    "VolumesGetStatusQuick": ("GET", False, Model.q_volumes_status),
    "AttachmentsList": ("GET", False, Model.q_attachments),
    "VolumeTemplatesList": ("GET", False, Model.q_templates_list),
    "VolumeTemplateDescribe": ("GET", True, Model.q_template_describe),
    "VolumeTemplatesStatus": ("GET", False, Model.q_templates_status),
    "PlacementGroupsList": ("GET", False, Model.q_placement_groups),
    "PlacementGroupDescribe": ("GET", True, Model.q_placement_group),
    "ServicesList": ("GET", False, Model.q_services),
    "ClustersList": ("GET", False, Model.q_clusters_list),
    "LocationsList": ("GET", False, Model.q_locations_list),
    "ClientsConfigDump": ("GET", False, Model.q_clients_config),
    "ClientConfigWait": ("GET", True, Model.q_client_config_wait),
    "ClientActiveRequests": ("GET", True, Model.q_client_active_requests),
    "VolumeCreate": ("POST", False, Model.q_volume_create),
    "VolumeUpdate": ("POST", True, Model.q_volume_update),
    "VolumeDelete": ("POST", True, Model.q_volume_delete),
    "VolumeRevert": ("POST", True, Model.q_volume_revert),
    "VolumeFreeze": ("POST", True, Model.q_volume_freeze),
    "VolumeSnapshot": ("POST", True, Model.q_volume_snapshot),
    "VolumesGroupSnapshot": ("POST", False, Model.q_group_snapshot),
    "SnapshotUpdate": ("POST", True, Model.q_snapshot_update),
    "SnapshotDelete": ("POST", True, Model.q_snapshot_delete),
    "SnapshotDeleteById": ("POST", True, Model.q_snapshot_delete_by_id),
    "VolumesReassign": ("POST", False, Model.q_reassign),
    "VolumesReassignWait": ("POST", False, Model.q_reassign_wait),
    "VolumeTemplateCreate": ("POST", False, Model.q_template_create),
    "VolumeTemplateUpdate": ("POST", True, Model.q_template_update),
    "VolumeTemplateDelete": ("POST", True, Model.q_template_delete),
}
"""Every supported query: (HTTP method, takes a path argument, handler)."""

from integration.storpool_sim import locations as _locations  # noqa: E402 - its handlers take a Model

QUERIES.update(_locations.QUERIES)

MUTATIONS = frozenset(q for q, (m, _a, _f) in QUERIES.items() if m == "POST")
