"""The StorPool connection layer: every StorPool call in the project goes through here.

Why one module: the official bindings retry transient errors for every call, including
creates, and a retried create whose first response was lost makes a second object. Here the
bindings are built with `transientRetries=0` and this layer owns the policy instead:

* reads are retried on transient errors with bounded exponential backoff, from one retry
  budget per operation: at most `retries` retries and `retry_budget` seconds (10 s by
  default) for the outermost call, shared by every call it makes (a create's lookups after a
  lost answer spend the create's budget, not a fresh one each), so a caller hears of a
  persistent failure within the budget rather than after retries multiplied by retries;
* idempotent mutations (absolute updates, deletes that accept "already gone") are retried too;
* creates are never blindly re-sent: after an ambiguous failure the object is looked up by its
  deterministic name, or by its CloudStack identity tags, and only re-sent if it is absent.

It also maps the API's errors to the project's exceptions (keeping StorPool's error name and
description), validates names and tags before anything is sent, counts calls per query (the
benchmarks print them beside the Java plugin's figures) and keeps the token out of every log
line and exception text.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import socket
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from storpool import spapi, spjson
from storpool.spcatch import InvalidArgumentError

from cloudstack_storpool import logs, metrics, names, spanswers, sptransport
from cloudstack_storpool.errors import (
    SpBusy,
    SpExists,
    SpNotFound,
    SpTransient,
    SpUnreachable,
    StorPoolError,
    ValidationError,
)
from cloudstack_storpool.poolconfig import PoolSpec, Secret, read_storpool_conf
from cloudstack_storpool.sprecords import (
    ByGlobalId,
    Kind,
    Mode,
    SpActiveRequest,
    SpAttachment,
    SpExport,
    SpSnapshot,
    SpTemplate,
    SpVolume,
)

log = logging.getLogger(__name__)

T = TypeVar("T")



class Addressable(Protocol):
    """Anything the layer can attach or detach: a record, or a `Ref` built from a name."""

    @property
    def kind(self) -> Kind: ...

    @property
    def ref(self) -> str: ...


@dataclass(frozen=True)
class Ref:
    """An object known only by its API name (`~globalId` or a name) and kind."""

    kind: Kind
    ref: str


@dataclass(frozen=True)
class Created(ByGlobalId):
    """What a create returns: the API name to use from now on, and whether a lost response was
    recovered by finding the object instead of creating it again."""

    name: str
    global_id: str
    recovered: bool = False


@dataclass(frozen=True)
class RemoteCluster:
    """One entry of ClustersList: `name` is what `RemoteCommand/<name>/` takes."""

    name: str
    sub_id: str
    location: str
    location_id: str | None
    """None for a cluster of the endpoint's own location (LocationsList lists remote ones only)."""


@dataclass(frozen=True)
class GroupMember:
    volume: str
    volume_global_id: str
    snapshot: str
    snapshot_global_id: str


class _RedactFilter(logging.Filter):
    """Masks the process's secrets (`logs.register_secret`) in any record of this module's
    logger, whatever handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        masked = logs.redact(msg)
        if masked is not msg:
            record.msg, record.args = masked, None
        return True


log.addFilter(_RedactFilter())


Endpoint = tuple[str, int, str]
"""host, port, token of one StorPool API address."""


class _CountingApi(spapi.Api):
    """The bindings' typed API (argument checks, paths, bodies, answer types, `ApiError`), on the
    project's own wire: every typed method ends in `self(method, multiCluster, query, json,
    clusterName)`, the one call this class answers, through the process's kept-open
    connections (sptransport.py). Where the call goes (endpoint, token, timeout) is this class's
    own state, never the bindings' private attributes; it counts queries on their way to the
    wire, and moves to the pool's alternative endpoint when the current one does not answer.

    `alternative` is asked only then (no cost while the primary answers; the operator's setting
    is read at the moment it matters). The call that met the silence is re-sent to the other
    endpoint only when it cannot have been applied: the connection was refused, or it was a
    read. Any other call fails as it did (the caller's create lookups and retries decide), and
    the next call goes to the other endpoint. Each switch is logged.
    """

    def __init__(self, *, host: str, port: int, auth: str, timeout: float, multiCluster: bool, counter: Counter[str],
                 alternative: Callable[[], Endpoint | None] | None = None) -> None:
        super().__init__(host=host, port=port, auth=auth, timeout=timeout, transientRetries=0,
                         multiCluster=multiCluster)
        self._counter = counter
        self._alternative = alternative
        self._wire_timeout = timeout
        self._multi = multiCluster
        self._primary: Endpoint = (host, int(port), "Storpool v1:" + auth)
        self._current = self._primary
        self._on_primary = True
        self._switch_lock = threading.Lock()

    def __call__(self, method: str, multiCluster: bool, query: str, json: Any = None, clusterName: Any = None) -> Any:
        name = query.split("/", 1)[0]
        try:
            return self._measured(name, method, multiCluster, query, json, clusterName)
        except (OSError, http.client.HTTPException) as exc:
            if not self._switch(exc):
                raise
            if not (isinstance(exc, ConnectionRefusedError) or method == "GET"):
                raise
        return self._measured(name, method, multiCluster, query, json, clusterName)

    def _measured(self, name: str, method: str, multiCluster: bool, query: str, json: Any, clusterName: Any) -> Any:
        """One call on the wire, counted and timed (metrics by query and outcome)."""
        self._counter[name] += 1
        start, outcome = time.monotonic(), "failed"
        try:
            result = self._wire(method, multiCluster, query, json, clusterName)
            outcome = "ok"
            return result
        except spapi.ApiError as exc:
            # A missing or existing object is an answer the caller expected to handle.
            if str(exc.name) in ("objectDoesNotExist", "objectExists"):
                outcome = "refused"
            raise
        finally:
            metrics.storpool_call(name, time.monotonic() - start, outcome)

    def _wire(self, method: str, multiCluster: bool, query: str, json: Any, clusterName: Any) -> Any:
        """The bindings' request and answer (`Api.__call__`'s path, body and error rules), sent
        through the process's kept-open connections (sptransport.py) instead of a new one."""
        body = spjson.dumps(spapi.clear_none(json)) if json is not None else None
        path = spapi.SP_API_PREFIX + "/" + (f"RemoteCommand/{clusterName}/" if clusterName is not None else "") \
            + ("MultiCluster/" if multiCluster and self._multi else "") + query
        if method == "GET" and body:
            path += "?json=" + urllib.parse.quote(body, safe="")
            body = None
        host, port, auth = self._current
        status, raw = sptransport.TRANSPORT.request(
            host, port, method, path, {"Authorization": auth}, body.encode() if body is not None else None,
            timeout=self._wire_timeout)
        answer = spjson.loads(raw)
        if status != 200 or "error" in answer:
            raise spapi.ApiError(status, answer)
        return answer["data"]

    def _switch(self, exc: BaseException) -> bool:
        """Point at the other endpoint; False when there is none to go to."""
        if self._alternative is None:
            return False
        with self._switch_lock:
            if self._on_primary:
                alt = self._alternative()
                if alt is None:
                    return False
                host, port, token = alt
                logs.register_secret(token)
                target: Endpoint = (host, port, "Storpool v1:" + token)
            else:
                target = self._primary
            log.warning("StorPool API %s:%s does not answer (%s): switching to the %s endpoint %s:%s",
                        self._current[0], self._current[1], type(exc).__name__,
                        "alternative" if self._on_primary else "primary", target[0], target[1])
            self._current, self._on_primary = target, not self._on_primary
            return True


def tags_match(have: Mapping[str, str] | None, want: Mapping[str, str]) -> bool:
    """An object's tags carry all of `want`; an empty `want` matches nothing, so a lookup by
    missing identity can never select every object of the cluster."""
    return bool(want) and all((have or {}).get(k) == v for k, v in want.items())


@dataclass
class _Budget:
    """What retrying may still spend in one operation (see the module docstring)."""

    deadline: float
    retries_left: int

    def take(self, delay: float, now: float) -> bool:
        if self.retries_left <= 0 or now + delay > self.deadline:
            return False
        self.retries_left -= 1
        return True


DEFAULT_RETRY_BUDGET = 10.0


class StorPoolConn:
    """A connection to one StorPool API endpoint, with the project's error and retry policy."""

    def __init__(
        self,
        host: str,
        port: int,
        token: str,
        *,
        multicluster: bool = True,
        timeout: float = 120.0,
        retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        sleep: Callable[[float], None] = time.sleep,
        our_id: int | None = None,
        alternative: Callable[[], Endpoint | None] | None = None,
        retry_budget: float = DEFAULT_RETRY_BUDGET,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        raw_token = token.reveal() if isinstance(token, Secret) else str.__str__(token)
        self.host, self.port = host, port
        self.our_id = our_id
        self.calls: Counter[str] = Counter()
        self._remotes: tuple[float, list[RemoteCluster]] | None = None
        self.home_cluster: str | None = None
        """SP_CLUSTER_ID of this endpoint's own cluster, once a create answered here shows it
        (see `volume_create`); None until then."""
        self._token = raw_token
        self._retries, self._backoff, self._max_backoff, self._sleep = retries, backoff, max_backoff, sleep
        self._retry_budget, self._clock = retry_budget, clock
        self._scope = threading.local()
        if raw_token:
            logs.register_secret(raw_token)
        self.api = _CountingApi(
            host=host, port=port, auth=raw_token, timeout=timeout, multiCluster=multicluster, counter=self.calls,
            alternative=alternative,
        )

    def __repr__(self) -> str:
        return f"StorPoolConn({self.host}:{self.port})"

    @classmethod
    def from_pool(cls, pool: PoolSpec, **kwargs: Any) -> StorPoolConn:
        return cls(pool.host, pool.port, pool.token, **kwargs)

    @classmethod
    def from_config(cls, path: str | Path | None = None, *, section: str | None = None, **kwargs: Any) -> StorPoolConn:
        """From `/etc/storpool.conf` (+ `.conf.d/`), or another file for tests and agents."""
        conf = read_storpool_conf(path, section=section)
        kwargs.setdefault("our_id", conf.our_id)
        return cls(conf.host, conf.port, conf.token, **kwargs)

    # ---------------------------------------------------------------- error mapping and retries

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text

    def _map(self, exc: BaseException, query: str) -> StorPoolError | ValidationError:
        if isinstance(exc, spapi.ApiError):
            name, descr = str(exc.name), self._redact(str(exc.desc))
            status = getattr(exc, "status", None)
            if name == "objectDoesNotExist":
                return SpNotFound(name, descr, status=status, query=query)
            if name == "objectExists":
                return SpExists(name, descr, status=status, query=query)
            if exc.transient:
                return SpTransient(name, descr, status=status, query=query)
            if name == "busy" or (name == "invalidParam" and "is open at" in descr):
                return SpBusy(name, descr, status=status, query=query)
            return StorPoolError(name, descr, status=status, query=query)
        if isinstance(exc, InvalidArgumentError):
            return ValidationError(query or "request", self._redact(str(exc)))
        if isinstance(exc, (OSError, http.client.HTTPException, socket.timeout)):
            return SpUnreachable("unreachable", self._redact(f"{type(exc).__name__}: {exc}"), query=query)
        raise exc

    def _once(self, query: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (spapi.ApiError, InvalidArgumentError, OSError, http.client.HTTPException) as exc:
            mapped = self._map(exc, query)
            log.debug("StorPool %s failed: %s", query, mapped)
            raise mapped from None

    @contextlib.contextmanager
    def _budget(self) -> Iterator[_Budget]:
        """The budget of the operation this thread is in; the outermost call opens it."""
        current: _Budget | None = getattr(self._scope, "budget", None)
        if current is not None:
            yield current
            return
        self._scope.budget = _Budget(self._clock() + self._retry_budget, self._retries)
        try:
            yield self._scope.budget
        finally:
            self._scope.budget = None

    def _may_retry(self, budget: _Budget, attempt: int) -> bool:
        """Sleep before the next try when the budget allows it; False when it is spent."""
        delay = min(self._backoff * (2 ** attempt), self._max_backoff)
        if not budget.take(delay, self._clock()):
            return False
        self._sleep(delay)
        return True

    def _retrying(self, query: str, fn: Callable[[], T]) -> T:
        """Run a call that is safe to repeat (a read, or an idempotent mutation)."""
        with self._budget() as budget:
            attempt = 0
            while True:
                try:
                    return self._once(query, fn)
                except SpTransient as exc:
                    log.info("StorPool %s: %s; retry %d", query, exc.descr, attempt + 1)
                    if not self._may_retry(budget, attempt):
                        raise
                    attempt += 1

    def _call(self, query: str, fn: Callable[[], T], retry: bool) -> T:
        return self._retrying(query, fn) if retry else self._once(query, fn)

    def _create(self, query: str, send: Callable[[], T], find: Callable[[], T | None] | None) -> T:
        """Send a create; after an ambiguous failure, look before sending again.

        What `find` returns says itself that it was recovered (`Created.recovered`). Without
        `find` (no deterministic name and no identity tags) an ambiguous failure is raised:
        re-sending could duplicate the object.
        """
        with self._budget() as budget:
            attempt = 0
            while True:
                try:
                    return self._once(query, send)
                except SpExists:
                    if attempt and find is not None:
                        found = find()
                        if found is not None:
                            return found
                    raise
                except SpTransient as exc:
                    if find is None or not self._may_retry(budget, attempt):
                        raise
                    log.warning("StorPool %s: ambiguous failure (%s); looking the object up before re-sending", query,
                                exc.descr)
                    attempt += 1
                    # The lookup spends this create's budget: no retries within retries.
                    found = self._retrying(query + " lookup", find)
                    if found is not None:
                        log.info("StorPool %s: the lost create had been applied; using the existing object", query)
                        return found

    @staticmethod
    def _finder(
        name: str | None, body_tags: Mapping[str, str], identity: Iterable[str],
        by_name: Callable[[str], Any | None], by_tags: Callable[[Mapping[str, str]], list[Any]],
    ) -> Callable[[], Created | None] | None:
        """How a create finds its own object after a lost answer: by its name when it has one,
        else by all of its `identity` tags (None when it carries only some: too ambiguous)."""
        if name:
            def find_by_name() -> Created | None:
                obj = by_name(name)
                return Created(obj.name, obj.global_id, True) if obj is not None else None
            return find_by_name
        wanted = tuple(identity)
        key = {k: body_tags[k] for k in wanted if k in body_tags}
        if not key or len(key) != len(wanted):
            return None

        def find_by_tags() -> Created | None:
            found = by_tags(key)
            return Created(found[0].ref, found[0].global_id, True) if found else None
        return find_by_tags

    def _delete(self, query: str, what: str, name: str, call: Callable[[], Any], missing_ok: bool) -> bool:
        """A retried delete for which "already gone" is success unless `missing_ok` is False.

        True when this call removed the object. After an ambiguous failure (the answer lost), a
        retry that finds the object gone means the lost request did remove it: that is reported
        as deleted, not as "was already gone"."""
        sent = [0]

        def counted() -> Any:
            sent[0] += 1
            return call()

        try:
            self._retrying(query, counted)
        except SpNotFound:
            if sent[0] > 1:
                log.info("deleted %s %s (the answer to an earlier try was lost)", what, name)
                return True
            if not missing_ok:
                raise
            return False
        log.info("deleted %s %s", what, name)
        return True

    # ---------------------------------------------------------------- reads

    # Every read asks the bindings for the answer's raw `data` (`returnRawAPIData=True`) and
    # builds the records from it (`spanswers`): the bindings' per-object types cost 20 times the
    # JSON parsing on big lists, and kept partial objects where a field was missing.

    def _first(self, query: str, fn: Callable[[], Any], read: Callable[[Any, str], list[T]]) -> T | None:
        """The object a by-name list query returns, None when it does not exist."""
        try:
            found = read(self._retrying(query, fn), query)
        except SpNotFound:
            return None
        return found[0] if found else None

    def volume(self, name: str) -> SpVolume | None:
        names.volume_name(name)
        return self._first("Volume", lambda: self.api.volumeList(name, returnRawAPIData=True), spanswers.volumes)

    def snapshot(self, name: str) -> SpSnapshot | None:
        names.snapshot_name(name)
        return self._first("Snapshot", lambda: self.api.snapshotList(name, returnRawAPIData=True),
                           spanswers.snapshots)

    def volumes(self) -> list[SpVolume]:
        return spanswers.volumes(self._retrying("VolumesList", lambda: self.api.volumesList(returnRawAPIData=True)),
                                 "VolumesList")

    def snapshots(self) -> list[SpSnapshot]:
        raw = self._retrying("SnapshotsList", lambda: self.api.snapshotsList(returnRawAPIData=True))
        return spanswers.snapshots(raw, "SnapshotsList")

    def volumes_space(self) -> list[SpVolume]:
        raw = self._retrying("VolumesSpace", lambda: self.api.volumesSpace(returnRawAPIData=True))
        return spanswers.volumes(raw, "VolumesSpace")

    def template(self, name: str) -> SpTemplate | None:
        names.template_name(name)
        try:
            raw = self._retrying("VolumeTemplateDescribe",
                                 lambda: self.api.volumeTemplateDescribe(name, returnRawAPIData=True))
        except SpNotFound:
            return None
        return spanswers.template(raw, "VolumeTemplateDescribe")

    def templates_status(self) -> list[Any]:
        return list(self._retrying("VolumeTemplatesStatus", self.api.volumeTemplatesStatus))

    def attachments(self) -> list[SpAttachment]:
        raw = self._retrying("AttachmentsList", lambda: self.api.attachmentsList(returnRawAPIData=True))
        return spanswers.attachments(raw, "AttachmentsList")

    def remote_clusters(self, *, max_age: float | None = None) -> list[RemoteCluster]:
        """The other clusters this endpoint reaches (ClustersList, with each location's id from
        LocationsList; clusters of this endpoint's own location have `location_id` None, as the
        API lists remote locations only). Read once per connection, again only when the caller
        accepts nothing older than `max_age` seconds: clusters join a location rarely."""
        now = time.monotonic()
        if self._remotes is not None and (max_age is None or now - self._remotes[0] <= max_age):
            return self._remotes[1]
        clusters = self._retrying("ClustersList", self.api.clustersList)["clusters"]
        ids: dict[str, str] = {}
        if clusters:
            locations = self._retrying("LocationsList", self.api.locationsList)["locations"]
            ids = {str(loc.name): str(loc.id) for loc in locations}
        found = [RemoteCluster(str(c.name), str(c.id), str(c.location), ids.get(str(c.location))) for c in clusters]
        self._remotes = (now, found)
        return found

    def services(self, *, retry: bool = True) -> Any:
        """ServicesList. The heartbeat asks with retry=False: a slow answer is itself news."""
        return self._call("ServicesList", self.api.servicesList, retry)

    def client_active_requests(self, client_id: int, *, retry: bool = True) -> list[SpActiveRequest]:
        """The I/O in flight on a client. An answer without its `requests` list is SpMalformed,
        never an empty list: the heartbeat must not read it as an idle client."""
        raw = self._call("ClientActiveRequests",
                         lambda: self.api.clientActiveRequests(client_id, returnRawAPIData=True), retry)
        return spanswers.active_requests(raw, "ClientActiveRequests")

    def find_volumes(self, tags: Mapping[str, str]) -> list[SpVolume]:
        """Volumes carrying all of `tags` (the driver's identity lookup)."""
        return [v for v in self.volumes() if tags_match(v.tags, tags)]

    def find_snapshots(self, tags: Mapping[str, str]) -> list[SpSnapshot]:
        return [s for s in self.snapshots() if tags_match(s.tags, tags) and not s.deleted]

    # ---------------------------------------------------------------- volumes

    def volume_create(
        self,
        *,
        name: str | None = None,
        size: int | None = None,
        template: str | None = None,
        parent: str | None = None,
        base_on: str | None = None,
        iops: int | None = None,
        bw: int | None = None,
        replication: int | None = None,
        tags: Mapping[str, str] | None = None,
        identity: Iterable[str] = ("uuid", "cs"),
        cluster: str | None = None,
    ) -> Created:
        """VolumeCreate. `identity` names the tags that identify an anonymous volume after a
        lost response (CloudStack uuid and kind, by default). `cluster` (a StorPool cluster of
        the multi-cluster location) creates it there (`RemoteCommand/<cluster>/`) instead of in
        the cluster of this endpoint; afterwards it is addressed like any other, by `~globalId`."""
        # Anonymous volumes omit the name (the bindings refuse ""); they are addressed by ~globalId.
        body: dict[str, Any] = {"name": names.volume_name(name)} if name else {}
        if size is not None:
            body["size"] = names.size(size)
        if template is not None:
            body["template"] = names.template_name(template)
        if parent is not None:
            body["parent"] = names.snapshot_name(parent, "parent")
        if base_on is not None:
            body["baseOn"] = names.volume_name(base_on, "baseOn")
        if iops is not None:
            body["iops"] = _limit(iops, "iops")
        if bw is not None:
            body["bw"] = _limit(bw, "bw")
        if replication is not None:
            if replication not in (1, 2, 3):
                raise ValidationError("replication", f"must be 1, 2 or 3, got {replication}")
            body["replication"] = replication
        if tags:
            body["tags"] = names.tags(tags)
        if size is None and parent is None and base_on is None:
            raise ValidationError("size", "required unless the volume has a parent or baseOn")
        if template is None and replication is None and parent is None and base_on is None:
            raise ValidationError("template", "a template (or replication) is required")

        find = self._finder(name, body.get("tags", {}), identity, self.volume, self.find_volumes)

        def send() -> Created:
            # The body as is, not through the bindings' VolumeCreateDesc: `names` checked every
            # value above, and typing it a second time cost a tenth of the service's CPU for
            # a volume create request. The wire form is the bindings' own (clear_none, their encoder).
            gid = spanswers.created_id(self.api("POST", True, "VolumeCreate", body, cluster), "globalId",
                                       "VolumeCreate")
            if cluster is None and parent is None and base_on is None and names.GLOBAL_ID.match(gid):
                # Nothing forwarded it and no object elsewhere drew it: it is in this endpoint's
                # own cluster, the first two parts of its global id (`<location>.<cluster>.<n>`).
                self.home_cluster = gid.rsplit(".", 1)[0]
            return Created(name or "~" + gid, gid)

        created = self._create("VolumeCreate", send, find)
        log.info("created volume %s (%s)", created.name, created.global_id)
        return created

    def volume_update(
        self,
        name: str,
        *,
        size: int | None = None,
        shrink_ok: bool = False,
        template: str | None = None,
        iops: int | None = None,
        bw: int | None = None,
        tags: Mapping[str, str] | None = None,
        rename: str | None = None,
    ) -> None:
        """VolumeUpdate with absolute values only, so that a retry cannot double-apply."""
        names.volume_name(name)
        body: dict[str, Any] = {}
        if size is not None:
            body["size"] = names.size(size)
            if shrink_ok:
                body["shrinkOk"] = True
        if template is not None:
            body["template"] = names.template_name(template)
        if iops is not None:
            body["iops"] = _limit(iops, "iops")
        if bw is not None:
            body["bw"] = _limit(bw, "bw")
        self._update("VolumeUpdate", self.api.volumeUpdate, name, body, tags,
                     names.volume_name(rename, "rename") if rename is not None else None)

    def volume_delete(self, name: str, *, on_attached: str = "detachForce", missing_ok: bool = True) -> bool:
        """Delete; returns False when it was already gone (success for CloudStack's purposes)."""
        names.volume_name(name)
        if on_attached not in ("fail", "detach", "detachForce"):
            raise ValidationError("onAttached", f"must be fail, detach or detachForce, got {on_attached!r}")
        # The bindings' volumeDelete sends no body, and onAttached is needed: the query by hand.
        query = f"VolumeDelete/{name}"
        return self._delete(query, "volume", name, lambda: self.api("POST", True, query, {"onAttached": on_attached}),
                            missing_ok)

    def volume_revert(self, name: str, to_snapshot: str) -> None:
        names.volume_name(name)
        body = {"toSnapshot": names.snapshot_name(to_snapshot, "toSnapshot")}
        self._retrying("VolumeRevert", lambda: self.api.volumeRevert(name, body))

    # ---------------------------------------------------------------- snapshots

    def snapshot_create(
        self,
        volume: str,
        *,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
        bind: bool | None = None,
        delete_after: int | None = None,
        identity: Iterable[str] = ("uuid", "cs"),
    ) -> Created:
        names.volume_name(volume, "volume")
        body: dict[str, Any] = {}
        if name:
            body["name"] = names.snapshot_name(name)
        if tags:
            body["tags"] = names.tags(tags)
        if bind is not None:
            body["bind"] = bind
        if delete_after is not None:
            if delete_after <= 0:
                raise ValidationError("deleteAfter", f"must be positive seconds, got {delete_after}")
            body["deleteAfter"] = delete_after
        find = self._finder(name, body.get("tags", {}), identity, self.snapshot, self.find_snapshots)

        def send() -> Created:
            gid = spanswers.created_id(self.api.snapshotCreate(volume, body, returnRawAPIData=True),
                                       "snapshotGlobalId", "VolumeSnapshot")
            return Created(name or "~" + gid, gid)

        created = self._create("VolumeSnapshot", send, find)
        log.info("snapshot %s of %s (%s)", created.name, volume, created.global_id)
        return created

    def snapshot_update(self, name: str, *, tags: Mapping[str, str] | None = None, rename: str | None = None) -> None:
        """SnapshotUpdate of tags and/or the name (a rename keeps the global id)."""
        names.snapshot_name(name)
        self._update("SnapshotUpdate", self.api.snapshotUpdate, name, {}, tags,
                     names.snapshot_name(rename, "rename") if rename is not None else None)

    def _update(self, query: str, send: Callable[[str, dict[str, Any]], Any], name: str, body: dict[str, Any],
                tags: Mapping[str, str] | None, rename: str | None) -> None:
        """An update with absolute values (a retry cannot double-apply them), plus tags and a
        new name; a rename is not idempotent by name, so an update with one is never retried."""
        if tags is not None:
            body["tags"] = names.tags(tags)
        if rename is not None:
            body["rename"] = rename
        if body:
            self._call(query, lambda: send(name, body), retry=rename is None)

    def snapshot_delete(self, name: str, *, missing_ok: bool = True) -> bool:
        names.snapshot_name(name)
        return self._delete("SnapshotDelete", "snapshot", name, lambda: self.api.snapshotDelete(name), missing_ok)

    def group_snapshot(
        self, volumes: Iterable[tuple[str, str | None]], *, tags: Mapping[str, str],
        member_tags: Iterable[Mapping[str, str]] | None = None,
    ) -> list[GroupMember]:
        """One VolumesGroupSnapshot: a single crash-consistent instant across all volumes.

        `tags` must identify the group (uuid of the VM snapshot, cs=group): after a lost
        response, the members are found by them instead of taking a second group snapshot.
        """
        members = [
            {"volume": names.volume_name(v, "volumes"), **({"name": names.snapshot_name(n)} if n else {})}
            for v, n in volumes
        ]
        if not members:
            raise ValidationError("volumes", "a group snapshot needs at least one volume")
        key = names.tags(tags)
        if not key.get("uuid"):
            raise ValidationError("tags.uuid", "a group snapshot must carry the uuid tag that identifies it")
        extras = [names.tags(t, "member_tags") for t in member_tags] if member_tags is not None else [{}] * len(members)
        if len(extras) != len(members):
            raise ValidationError("member_tags", f"{len(extras)} tag sets for {len(members)} volumes")
        body = {"volumes": [{**m, "tags": {**key, **extra}} for m, extra in zip(members, extras, strict=True)], "tags": key}

        def find() -> list[GroupMember] | None:
            found = self.find_snapshots(key)
            if len(found) < len(members):
                return None
            return [GroupMember(s.on_volume, "", s.ref, s.global_id) for s in found]

        def send() -> list[GroupMember]:
            res = self.api.snapshotCreateGroup(body)
            return [
                GroupMember(s.volume, s.volumeGlobalId, "~" + s.snapshotGlobalId, s.snapshotGlobalId)
                for s in res.snapshots
            ]

        return self._create("VolumesGroupSnapshot", send, find)

    # ---------------------------------------------------------------- attachments

    def attach(self, obj: Addressable, client: int, mode: Mode = "rw", *, timeout: int | None = None) -> None:
        """Attach to one client; returns once that client applied it (VolumesReassignWait), so
        the caller may wait for the device at once. Snapshots attach read-only only."""
        if mode not in ("rw", "ro"):
            raise ValidationError("mode", f"must be rw or ro, got {mode!r}")
        if obj.kind == "snapshot" and mode == "rw":
            raise ValidationError("mode", "a snapshot attaches read-only only")
        body: dict[str, Any] = {"reassign": [{obj.kind: obj.ref, mode: [_client(client)]}]}
        if timeout is not None:
            body["attachTimeout"] = max(1, int(timeout))
        self._retrying("VolumesReassignWait", lambda: self.api.volumesReassignWait(body))

    def detach(
        self, objs: Addressable | Sequence[Addressable], client: int | Sequence[int] | Literal["all"] = "all", *,
        force: bool = False,
    ) -> bool:
        """Detach objects from some clients or from every client, in one request.

        From named clients (the agent) it waits until they applied it, as an attach does; from
        all clients (the management side, before a revert or a delete) it does not: a client
        that is down must not hold the operation up, and StorPool refuses the revert or delete
        itself while anything is still attached. Returns False when an object is gone (nothing
        to detach: for the caller's purposes a success).
        """
        items = [objs] if not isinstance(objs, Sequence) else list(objs)
        if not items:
            return True
        who: list[int] | str = "all" if client == "all" else (
            [_client(client)] if isinstance(client, int) else [_client(c) for c in client])
        body = [{o.kind: o.ref, "detach": who, **({"force": True} if force else {})} for o in items]
        try:
            if who == "all":
                self._retrying("VolumesReassign", lambda: self.api.volumesReassign(body))
            else:
                self._retrying("VolumesReassignWait", lambda: self.api.volumesReassignWait({"reassign": body}))
        except SpNotFound:
            return False
        return True

    # ---------------------------------------------------------------- between locations

    def snapshot_export(self, name: str, location: str) -> None:
        """Allow another StorPool location to copy a snapshot (SnapshotExport; again is harmless)."""
        body = {"snapshot": names.snapshot_name(name, "snapshot"), "location": names.location_name(location)}
        self._retrying("SnapshotExport", lambda: self.api.snapshotExport(body))
        log.info("snapshot %s exported to location %s", name, location)

    def snapshot_unexport(self, name: str, location: str, *, force: bool = False) -> bool:
        """Revoke a location's access to a snapshot; False when it was not exported there (or is
        gone). Without `force` StorPool refuses while that location's copy is still arriving."""
        body: dict[str, Any] = {"snapshot": names.snapshot_name(name, "snapshot"), "location": names.location_name(location)}
        if force:
            body["force"] = True
        try:
            self._retrying("SnapshotUnexport", lambda: self.api.snapshotUnexport(body))
        except SpNotFound:
            return False
        log.info("snapshot %s no longer exported to location %s", name, location)
        return True

    def exports(self) -> list[SpExport]:
        """The snapshots of this endpoint's cluster that other locations may copy (ExportsList)."""
        found = self._retrying("ExportsList", self.api.exportsList)["exports"]
        return [SpExport(str(e.globalId), str(e.location)) for e in found]

    def snapshot_from_remote(self, global_id: str, location: str, *, template: str,
                             tags: Mapping[str, str]) -> None:
        """Copy a snapshot another location exported to this one (SnapshotFromRemote): an
        anonymous snapshot here with the same global id, in `template`. Not retried: a lost
        answer is settled by looking for `~global_id`, which the caller does."""
        body = {"remoteId": names.global_id_name(global_id, "remoteId")[1:], "remoteLocation": names.location_name(location),
                "template": names.template_name(template, "template"), "tags": names.tags(tags)}
        self._once("SnapshotFromRemote", lambda: self.api.snapshotFromRemote(body))
        log.info("snapshot ~%s copied from location %s", global_id, location)

    def snapshot_reconcile(self, name: str) -> None:
        """SnapshotReconcile of a copied snapshot (the bindings have no method for it)."""
        query = f"SnapshotReconcile/{names.snapshot_name(name)}"
        self._retrying("SnapshotReconcile", lambda: self.api("POST", True, query, None))


def _client(client: int) -> int:
    if not names.is_client_id(client):
        raise ValidationError("client", f"must be a StorPool client id 1..4095, got {client!r}")
    return client


def _limit(value: int, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(field, f"must be a non-negative integer (0 = no limit), got {value!r}")
    return value
