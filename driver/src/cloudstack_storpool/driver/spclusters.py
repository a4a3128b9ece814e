"""Several StorPool clusters: which one a CloudStack cluster's new volumes go to, and how.

A multi-cluster StorPool location has several clusters behind every one of their API
endpoints. Objects are found anywhere through `MultiCluster/` by `~globalId`, but a volume is
created in the cluster of the endpoint that receives the VolumeCreate, unless the request is
forwarded with `RemoteCommand/<cluster name>/`. The KVM hosts of a CloudStack cluster are
clients of one StorPool cluster, so their VMs' volumes (and the template caches those are
cloned from) must be made there.

The settings, as CloudStack's StorPool plugin defines and uses them (StorPoolConfigurationManager,
StorPoolHelper, StorPoolSnapshotStrategy; docs/decisions.md):

* `sp.cluster.id` (cluster scope): the StorPool cluster of the CloudStack cluster, its
  `SP_CLUSTER_ID` (`<location id>.<cluster id>`, the prefix of its global ids). The Java host
  listener records it from each connecting host (StorPoolHelper.setSpClusterIdIfNeeded) and
  matches an object to a CloudStack cluster by `globalId.contains(sp.cluster.id)`
  (findClusterIdByGlobalId), to pick the hosts that copy it. The Java plugin never forwards a
  call with `RemoteCommand/`: it creates every volume through the pool's endpoint. Forwarding
  the create to the CloudStack cluster's StorPool cluster is this project's addition; the id is
  mapped to the name `RemoteCommand/` takes through the endpoint's ClustersList (and
  LocationsList). An id the endpoint does not list is the endpoint's own cluster; once a create
  on the connection has shown the endpoint's own id (`StorPoolConn.home_cluster`), that id is
  home without a look at the list: the listener records it on every CloudStack cluster whose
  hosts are clients of the pool's cluster.
* `sp.cluster.endpoint` (cluster scope): that StorPool cluster's own API, read by position as
  `SP_API_HTTP=host:port;SP_AUTH_TOKEN=token` (StorPoolHelper.getSpConnectionDesc), always with
  the pool's template. The Java plugin sends there the SnapshotExport / SnapshotUnexport of a
  snapshot living in that cluster; here, in addition, the creates for that cluster.
* `sp.cluster.location` (storage-pool scope) is not read here: it is the StorPool *location
  name* of the pool's hosts (the host listener sets it from `storpool location list`), used by
  the Java plugin only to copy snapshots between pools of different locations.

Every bad value is a ValidationError naming the setting, raised before anything is created.
Cost: none without `sp.cluster.id`/`sp.cluster.endpoint`; otherwise two cached reads of
CloudStack settings per create, and ClustersList + LocationsList once per connection.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cloudstack_storpool.errors import ValidationError
from cloudstack_storpool.poolconfig import PoolSpec, parse_cluster_endpoint
from cloudstack_storpool.spconn import RemoteCluster, StorPoolConn

if TYPE_CHECKING:
    from cloudstack_storpool.driver.context import DriverContext

log = logging.getLogger(__name__)

CLUSTER_ID = "sp.cluster.id"
CLUSTER_ENDPOINT = "sp.cluster.endpoint"
UNSET = ("", "n/a", "null")
"""Values meaning "not set": empty, the Java default `n/a`, CloudStack's null."""
REMOTES_MAX_AGE = 60.0
"""On a miss, the endpoint's cluster list is read again when it is older than this (seconds)."""
_SP_CLUSTER_ID = re.compile(r"^[a-z0-9]+\.[a-z0-9]+$")
_warned: set[tuple[str, str]] = set()
"""(sp.cluster.id, endpoint) pairs already warned about: once per process, not per create."""


@dataclass(frozen=True)
class Target:
    """Where new volumes of one CloudStack cluster are made."""

    conn: StorPoolConn
    remote: str | None = None
    """The cluster name for `RemoteCommand/`; None: the cluster of `conn`'s endpoint."""
    sp_cluster: str | None = None
    """SP_CLUSTER_ID of the target when it is not the pool's own cluster (names its caches)."""
    cs_cluster: str | None = None
    """The CloudStack cluster (its hosts do the copies for this cluster)."""

    @property
    def home(self) -> bool:
        """The pool's own StorPool cluster: the project's and the Java plugin's caches live there."""
        return self.sp_cluster is None

    def create_args(self, args: dict[str, Any]) -> dict[str, Any]:
        """`volume_create` keyword arguments for this target, from the placement's."""
        return dict(args, cluster=self.remote)


def home(ctx: DriverContext, spec: PoolSpec, cs_cluster: str | None = None) -> Target:
    return Target(ctx.conn(spec), cs_cluster=cs_cluster)


def target(ctx: DriverContext, spec: PoolSpec, cs_cluster: str | None) -> Target:
    """The StorPool cluster (and endpoint) for new volumes of CloudStack cluster `cs_cluster`."""
    if not cs_cluster:
        return home(ctx, spec)
    sp_id = sp_cluster_id(ctx, cs_cluster)
    endpoint = cluster_endpoint(ctx, spec, cs_cluster)
    if endpoint is not None and sp_id is None:
        raise ValidationError(CLUSTER_ID, f"CloudStack cluster {cs_cluster} has {CLUSTER_ENDPOINT} but no "
                                          f"{CLUSTER_ID}: set it to that StorPool cluster's SP_CLUSTER_ID")
    if sp_id is None:
        return home(ctx, spec, cs_cluster)
    if endpoint is not None:  # that cluster's own API, no forwarding; an API serves one cluster
        own = endpoint.endpoint == spec.endpoint
        return Target(ctx.conn(endpoint), sp_cluster=None if own else sp_id, cs_cluster=cs_cluster)
    conn = ctx.conn(spec)
    if sp_id == conn.home_cluster:  # the endpoint's own cluster, known from a create made there
        return home(ctx, spec, cs_cluster)
    found = _remote(conn, sp_id)
    if found is not None:
        return Target(conn, remote=found.name, sp_cluster=sp_id, cs_cluster=cs_cluster)
    if conn.remote_clusters() and (sp_id, repr(conn)) not in _warned:
        _warned.add((sp_id, repr(conn)))
        known = ", ".join(sorted(c.name for c in conn.remote_clusters()))
        log.warning("%s %r of CloudStack cluster %s is not a remote cluster of %s (remote clusters: %s): taking it "
                    "as the endpoint's own cluster", CLUSTER_ID, sp_id, cs_cluster, conn, known)
    return home(ctx, spec, cs_cluster)


def _all(ctx: DriverContext, spec: PoolSpec) -> list[Target]:
    """The target of every CloudStack cluster of the pool's zone. A cluster whose settings are
    wrong is left out with a warning: nothing of this project can be there."""
    out = []
    for cluster in ctx.cloudstack.clusters(spec.zone or None):
        try:
            out.append(target(ctx, spec, cluster.id))
        except ValidationError as exc:
            log.warning("CloudStack cluster %s: %s", cluster.id, exc)
    return out


def targets(ctx: DriverContext, spec: PoolSpec) -> list[Target]:
    """The other StorPool clusters the pool's volumes are made in (one per distinct cluster),
    for whoever must visit every cache of a template."""
    out: dict[str, Target] = {}
    for where in _all(ctx, spec):
        if where.sp_cluster is not None:
            out.setdefault(where.sp_cluster, where)
    return list(out.values())


def copy_clusters(ctx: DriverContext, spec: PoolSpec, where: Target) -> list[str] | None:
    """The CloudStack clusters whose hosts can attach objects of `where`'s StorPool cluster (a
    host is a client of its own cluster only); None, any host, when the pool has one cluster."""
    return _hosts_of(ctx, spec, where.sp_cluster)


def holding(ctx: DriverContext, spec: PoolSpec, global_id: str | None) -> list[str] | None:
    """The CloudStack clusters whose hosts can attach the object `global_id`: its StorPool
    cluster is the id's first two parts (as the Java plugin reads it). None, any host, when the
    pool has one cluster or the id is not known."""
    if not global_id:
        return None
    return _hosts_of(ctx, spec, ".".join(global_id.removeprefix("~").split(".")[:2]), own_if_unknown=True)


def _hosts_of(ctx: DriverContext, spec: PoolSpec, sp_cluster: str | None, *, own_if_unknown: bool = False,
              ) -> list[str] | None:
    every = [(t.cs_cluster, t.sp_cluster) for t in _all(ctx, spec)]
    if all(sp is None for _cs, sp in every):
        return None
    found = [cs for cs, sp in every if cs is not None and sp == sp_cluster]
    if not found and own_if_unknown:  # not another cluster's: the pool's own
        found = [cs for cs, sp in every if cs is not None and sp is None]
    return found


def _remote(conn: StorPoolConn, sp_id: str) -> RemoteCluster | None:
    """The ClustersList entry of SP_CLUSTER_ID `sp_id` (a fresh look on a miss, at most once a
    minute: the pool's own cluster is never in the list)."""
    loc, sub = sp_id.split(".")
    for max_age in (None, REMOTES_MAX_AGE):
        clusters = conn.remote_clusters(max_age=max_age)
        # A cluster of the endpoint's own location has no location id in the listing: it is
        # `sp_id`'s only when `loc` is none of the remote locations' ids.
        remote_locations = {c.location_id for c in clusters if c.location_id is not None}
        exact = [c for c in clusters if c.sub_id == sub and c.location_id == loc]
        local = [c for c in clusters if c.sub_id == sub and c.location_id is None and loc not in remote_locations]
        if exact or local:
            return (exact or local)[0]
    return None


def _text(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return None if text in UNSET else text


def _checked_id(value: Any, setting: str) -> str | None:
    text = _text(value)
    if text is not None and not _SP_CLUSTER_ID.match(text):
        raise ValidationError(setting, f"{text!r} is not a StorPool cluster id: expected SP_CLUSTER_ID, "
                                       "<location id>.<cluster id> such as 'abcd.b' (the prefix of the "
                                       "cluster's global ids)")
    return text


def sp_cluster_id(ctx: DriverContext, cs_cluster: str) -> str | None:
    """`sp.cluster.id` of a CloudStack cluster, checked; None when unset."""
    return _checked_id(ctx.settings.get(CLUSTER_ID, cluster=cs_cluster), CLUSTER_ID)


def cluster_endpoint(ctx: DriverContext, spec: PoolSpec, cs_cluster: str) -> PoolSpec | None:
    """`sp.cluster.endpoint` of a CloudStack cluster as a connection with the pool's template;
    None when unset."""
    text = _text(ctx.settings.get(CLUSTER_ENDPOINT, cluster=cs_cluster))
    return None if text is None else parse_cluster_endpoint(text, spec.template, CLUSTER_ENDPOINT)
