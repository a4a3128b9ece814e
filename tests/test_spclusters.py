"""`spclusters.target`: from a CloudStack cluster's settings to a StorPool connection and the
`RemoteCommand/` cluster name, including clusters of another location (not in the end-to-end
tests, whose emulators share one location), the settings read as CloudStack's StorPool plugin
reads them, and every refusal naming its setting."""

from __future__ import annotations

from typing import Any

import pytest

from cloudstack_storpool.driver import spclusters
from cloudstack_storpool.errors import ValidationError
from cloudstack_storpool.poolconfig import PoolSpec, Secret
from cloudstack_storpool.spconn import RemoteCluster

POOL = PoolSpec(host="10.0.0.1", port=81, token=Secret("pool-token"), template="ssd", uuid="p-1", name="primary")
REMOTES = [
    RemoteCluster("east", "e", "sofia", None),  # the endpoint's own location
    RemoteCluster("far-east", "e", "plovdiv", "pl0v"),  # same cluster id, another location
    RemoteCluster("north", "n", "plovdiv", "pl0v"),
]


class FakeConn:
    def __init__(self, remotes: list[RemoteCluster]) -> None:
        self.remotes, self.reads = remotes, 0
        self.home_cluster: str | None = None

    def remote_clusters(self, *, max_age: float | None = None) -> list[RemoteCluster]:
        self.reads += 1
        return self.remotes


class FakeCtx:
    def __init__(self, values: dict[tuple[str, str], Any], remotes: list[RemoteCluster] = REMOTES) -> None:
        self.values = values
        self.conns: dict[tuple[str, int], FakeConn] = {}
        self.remotes = remotes

    class _Settings:
        def __init__(self, outer: FakeCtx) -> None:
            self.outer = outer

        def get(self, name: str, *, cluster: str | None = None, pool: str | None = None) -> Any:
            return self.outer.values.get((name, cluster or pool or ""))

    @property
    def settings(self) -> FakeCtx._Settings:
        return FakeCtx._Settings(self)

    def conn(self, spec: PoolSpec) -> FakeConn:
        return self.conns.setdefault((spec.host, spec.port), FakeConn(self.remotes))


def target(values: dict[tuple[str, str], Any], cs: str | None = "c-1",
           remotes: list[RemoteCluster] = REMOTES) -> spclusters.Target:
    return spclusters.target(FakeCtx(values, remotes), POOL, cs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("sp_id", "remote"), [
    ("s0f1a.e", "east"),  # own location: listed without a location id
    ("pl0v.e", "far-east"),  # another location: told apart by LocationsList's id
    ("pl0v.n", "north"),
])
def test_sp_cluster_id_maps_to_the_name_remote_command_takes(sp_id: str, remote: str) -> None:
    where = target({("sp.cluster.id", "c-1"): sp_id})
    assert where.remote == remote and where.sp_cluster == sp_id and not where.home


def test_sp_cluster_location_is_a_location_name_and_does_not_route() -> None:
    """The Java host listener writes the location's *name* there (StorPoolHelper.setLocationIfNeeded);
    it is for copying snapshots between locations, never read for a create."""
    assert target({("sp.cluster.id", "c-1"): "s0f1a.e", ("sp.cluster.location", "p-1"): "sofia"}).remote == "east"
    assert target({("sp.cluster.id", "c-1"): "s0f1a.b", ("sp.cluster.location", "p-1"): "sofia"}).home


@pytest.mark.parametrize("value", [None, "", "n/a", " n/a "])
def test_no_cluster_id_is_the_pools_own_cluster(value: str | None) -> None:
    where = target({("sp.cluster.id", "c-1"): value})
    assert where.home and where.remote is None and where.conn.reads == 0  # type: ignore[attr-defined]


def test_an_id_the_endpoint_does_not_list_is_its_own_cluster() -> None:
    # Java single-cluster clouds: the host listener records SP_CLUSTER_ID on every CloudStack cluster.
    assert target({("sp.cluster.id", "c-1"): "s0f1a.b"}).home
    # A cluster id of another location that only shares the sub-id with a local cluster is not it.
    assert target({("sp.cluster.id", "c-1"): "pl0v.e"}, remotes=[RemoteCluster("east", "e", "sofia", None),
                                                                 RemoteCluster("n", "n", "plovdiv", "pl0v")]).home
    assert target({}, cs=None).home


def test_the_endpoints_own_id_once_a_create_showed_it_needs_no_look_at_its_clusters() -> None:
    """The host listener records the pool's own SP_CLUSTER_ID on every CloudStack cluster whose
    hosts are its clients: once known, that id is home with no ClustersList read (and no warning);
    another id is still looked up."""
    ctx = FakeCtx({("sp.cluster.id", "c-1"): "s0f1a.b", ("sp.cluster.id", "c-2"): "pl0v.n"})
    conn = ctx.conn(POOL)
    conn.home_cluster = "s0f1a.b"
    assert spclusters.target(ctx, POOL, "c-1").home and conn.reads == 0  # type: ignore[arg-type]
    assert spclusters.target(ctx, POOL, "c-2").remote == "north" and conn.reads == 1  # type: ignore[arg-type]


def test_cluster_endpoint_is_read_as_the_java_plugin_reads_it() -> None:
    """StorPoolHelper.getSpConnectionDesc: item 1 is the address, item 2 the token, by position;
    the template stays the pool's (a SP_TEMPLATE after them is not read)."""
    for text in ("SP_API_HTTP=10.0.9.9:8081;SP_AUTH_TOKEN=east-token",
                 "SP_API_HTTP=10.0.9.9:8081;SP_AUTH_TOKEN=east-token;SP_TEMPLATE=hdd"):
        ctx = FakeCtx({("sp.cluster.id", "c-1"): "s0f1a.e", ("sp.cluster.endpoint", "c-1"): text})
        where = spclusters.target(ctx, POOL, "c-1")  # type: ignore[arg-type]
        assert list(ctx.conns) == [("10.0.9.9", 8081)]  # the pool's endpoint is not asked
        assert where.remote is None and where.sp_cluster == "s0f1a.e" and not where.home
        assert where.create_args({"template": "ssd", "iops": 5}) == {"template": "ssd", "iops": 5, "cluster": None}
    own = target({("sp.cluster.id", "c-1"): "s0f1a.b",
                  ("sp.cluster.endpoint", "c-1"): "SP_API_HTTP=10.0.0.1:81;SP_AUTH_TOKEN=pool-token"})
    assert own.home  # the pool's own API: its own cluster


@pytest.mark.parametrize(("values", "field"), [
    ({("sp.cluster.id", "c-1"): "east"}, "sp.cluster.id"),
    ({("sp.cluster.id", "c-1"): "S0F1A.E"}, "sp.cluster.id"),
    ({("sp.cluster.endpoint", "c-1"): "SP_API_HTTP=h:81;SP_AUTH_TOKEN=tok-tok"}, "sp.cluster.id"),
    ({("sp.cluster.id", "c-1"): "s0f1a.e", ("sp.cluster.endpoint", "c-1"): "east-api"}, "sp.cluster.endpoint"),
    ({("sp.cluster.id", "c-1"): "s0f1a.e", ("sp.cluster.endpoint", "c-1"): "SP_API_HTTP=h:x;SP_AUTH_TOKEN=tok-tok"},
     "sp.cluster.endpoint"),
    # Java reads by position: the token first would be taken as the address.
    ({("sp.cluster.id", "c-1"): "s0f1a.e", ("sp.cluster.endpoint", "c-1"): "SP_AUTH_TOKEN=tok-tok;SP_API_HTTP=h:81"},
     "sp.cluster.endpoint"),
    # Java splits on `;` and `=`: a storpool:// URL has neither where it looks.
    ({("sp.cluster.id", "c-1"): "s0f1a.e", ("sp.cluster.endpoint", "c-1"): "storpool://tok-tok@h:81/t"},
     "sp.cluster.endpoint"),
])
def test_bad_values_name_the_setting(values: dict[tuple[str, str], Any], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        target(values)
    assert err.value.field.split(".SP_")[0] == field
