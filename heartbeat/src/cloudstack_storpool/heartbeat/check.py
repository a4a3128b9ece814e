"""Management-side heartbeat check: is a suspect host alive, dead, or can StorPool not tell?

Cost is the point of the shape here. CloudStack asks about hosts one by one, and the Java
plugin ran one `storpool service list` per pool per host. A single ServicesList answers for
every client of a StorPool cluster, so a round asks it once per cluster (pools sharing an API
endpoint are one cluster) and derives every host's verdict from that one answer. Only hosts
that look down cost more: a few ClientActiveRequests samples over a short window, and one
confirming ServicesList per cluster at the end of it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from cloudstack_storpool.heartbeat.answers import Services, read_active_requests, read_services
from cloudstack_storpool.heartbeat.policy import (
    CLUSTER_RUNNING,
    RUNNING,
    ClientView,
    Decision,
    IoSample,
    Verdict,
    combine,
    first_look,
    suspect_decision,
)
from cloudstack_storpool.poolconfig import PoolSpec
from cloudstack_storpool.spconn import StorPoolConn

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class CheckConfig:
    """Knobs of the management-side check; plain values so the core needs no CloudStack."""

    fence_on_any: bool = False
    """`kvm.ha.fence.on.storage.heartbeat.failure` of the host's zone."""
    io_window: float = 2.0
    """Seconds over which a down client's active requests are sampled."""
    io_samples: int = 3
    """ClientActiveRequests samples per suspect host within the window (at least 1)."""
    api_timeout: float = 5.0
    """Per-call timeout: a heartbeat that waits two minutes for an answer is no heartbeat."""

    def __post_init__(self) -> None:
        if self.io_samples < 1:
            raise ValueError("io_samples must be at least 1")
        if self.io_window < 0 or self.api_timeout <= 0:
            raise ValueError("io_window must be >= 0 and api_timeout > 0")


@dataclass(frozen=True)
class HostTarget:
    """A host to check: its CloudStack name/id (for people) and StorPool client id (for the API)."""

    name: str
    client_id: int
    host_id: str = ""


@dataclass(frozen=True)
class PoolVerdict:
    pool: str
    verdict: Verdict
    reason: str


@dataclass(frozen=True)
class HostVerdict:
    host: HostTarget
    pools: tuple[PoolVerdict, ...]
    verdict: Verdict

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host.name,
            "host_id": self.host.host_id,
            "client_id": self.host.client_id,
            "verdict": self.verdict.value,
            "pools": [{"pool": p.pool, "verdict": p.verdict.value, "reason": p.reason} for p in self.pools],
        }


@dataclass(frozen=True)
class Activity:
    """VM activity on storage: `active` is None when StorPool could not be asked."""

    active: bool | None
    volumes: frozenset[str]
    reason: str


@dataclass
class Cluster:
    """Pools that share one API endpoint: one StorPool cluster, one connection, one ServicesList."""

    endpoint: str
    pools: list[PoolSpec]
    conn: StorPoolConn


def pool_label(pool: PoolSpec) -> str:
    """How a pool is named in verdicts, and so in the status table's columns."""
    return pool.name or pool.uuid or pool.endpoint


ConnFactory = Callable[[PoolSpec, float], StorPoolConn]


def default_conn(pool: PoolSpec, timeout: float) -> StorPoolConn:
    return StorPoolConn.from_pool(pool, timeout=timeout)


def group_clusters(pools: Sequence[PoolSpec], factory: ConnFactory, timeout: float) -> list[Cluster]:
    """Pools grouped by API endpoint, in first-seen order (which keeps "the last pool" stable)."""
    clusters: dict[str, Cluster] = {}
    for pool in pools:
        if pool.endpoint in clusters:
            clusters[pool.endpoint].pools.append(pool)
        else:
            clusters[pool.endpoint] = Cluster(pool.endpoint, [pool], factory(pool, timeout))
    return list(clusters.values())


class HeartbeatChecker:
    """Decides Alive / Dead / Unknown for hosts, per pool and combined, from StorPool alone."""

    def __init__(
        self,
        pools: Sequence[PoolSpec],
        config: CheckConfig | None = None,
        *,
        conn_factory: ConnFactory = default_conn,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not pools:
            raise ValueError("the heartbeat check needs at least one pool")
        self.pools = list(pools)
        self.config = config or CheckConfig()
        self.clusters = group_clusters(self.pools, conn_factory, self.config.api_timeout)
        self._sleep = sleep

    def query_counts(self) -> Counter[str]:
        """StorPool queries sent so far by this checker, by query name, over all clusters
        (the demo and the tests count a round's ServicesList calls exactly)."""
        total: Counter[str] = Counter()
        for cluster in self.clusters:
            total.update(cluster.conn.calls)
        return total

    def calls(self) -> int:
        """StorPool queries sent so far by this checker, over all clusters."""
        return sum(self.query_counts().values())

    # ------------------------------------------------------------------ the round

    def check(self, hosts: Sequence[HostTarget]) -> list[HostVerdict]:
        """One round for all `hosts`; the order of the result follows `hosts`."""
        per_cluster = {c.endpoint: self._cluster_round(c, hosts) for c in self.clusters}
        results = []
        for host in hosts:
            pool_verdicts = []
            for pool in self.pools:
                decision = per_cluster[pool.endpoint][host.client_id]
                pool_verdicts.append(PoolVerdict(pool_label(pool), decision.verdict, decision.reason))
            combined = combine([p.verdict for p in pool_verdicts], fence_on_any=self.config.fence_on_any)
            results.append(HostVerdict(host, tuple(pool_verdicts), combined))
            if combined is Verdict.DEAD:
                log.warning("heartbeat: host %s (client %d) is dead for storage: %s", host.name, host.client_id,
                            "; ".join(f"{p.pool}: {p.reason}" for p in pool_verdicts))
        return results

    def check_host(self, host: HostTarget) -> HostVerdict:
        return self.check([host])[0]

    def _services(self, cluster: Cluster) -> Services | str:
        services = read_services(cluster.conn)
        if isinstance(services, str):
            log.info("heartbeat: ServicesList on %s: %s", cluster.endpoint, services)
        return services

    def _cluster_round(self, cluster: Cluster, hosts: Sequence[HostTarget]) -> dict[int, Decision]:
        services = self._services(cluster)
        if isinstance(services, str):
            unknown = Decision(Verdict.UNKNOWN, services)
            return {h.client_id: unknown for h in hosts}
        decisions: dict[int, Decision] = {}
        suspects: dict[int, ClientView] = {}
        for host in hosts:
            if host.client_id in decisions or host.client_id in suspects:
                continue
            view = services.clients.view(host.client_id)
            decision = first_look(services.cluster_status, view)
            if decision is None:
                suspects[host.client_id] = view
            else:
                decisions[host.client_id] = decision
        if suspects:
            decisions.update(self._judge_suspects(cluster, suspects))
        return decisions

    def _spaced(self, n: int, window: float) -> Iterator[int]:
        """range(n), sleeping between steps so that `n` samples span `window` seconds."""
        pause = window / (n - 1) if n > 1 else 0.0
        for i in range(n):
            if i:
                self._sleep(pause)
            yield i

    def _sample(self, cluster: Cluster, client_id: int) -> IoSample:
        seen = read_active_requests(cluster.conn, client_id)
        return IoSample(None if seen.volumes is None else len(seen.volumes), seen.reason)

    def _judge_suspects(self, cluster: Cluster, suspects: dict[int, ClientView]) -> dict[int, Decision]:
        samples: dict[int, list[IoSample]] = {cid: [] for cid in suspects}
        for _ in self._spaced(self.config.io_samples, self.config.io_window):
            for cid in suspects:
                # A client already seen busy or unreadable cannot become Dead in this round.
                if samples[cid] and (samples[cid][-1].requests is None or samples[cid][-1].requests):
                    continue
                samples[cid].append(self._sample(cluster, cid))
        confirmed = self._services(cluster)
        index = None if isinstance(confirmed, str) else confirmed.clients
        quorate = not isinstance(confirmed, str) and confirmed.cluster_status == CLUSTER_RUNNING
        out = {}
        for cid, view in suspects.items():
            confirm = None if index is None else index.view(cid)
            if confirm is not None and not quorate and confirm.status != RUNNING:
                # Without quorum only a running client is news; "down" there confirms nothing.
                confirm = None
            out[cid] = suspect_decision(view, samples[cid], confirm)
        return out

    # ------------------------------------------------------------------ VM activity

    def vm_activity(
        self, host: HostTarget, volumes: Iterable[str], *, pool: str | None = None,
        window: float | None = None, samples: int | None = None,
    ) -> Activity:
        """Has `host` I/O in flight on any of `volumes` (names, `~globalId` or globalId)?

        This is CloudStack's "VM activity check" for a suspect host: any request seen on one of
        the VM's volumes means the VM still runs there. StorPool lists only live requests, so
        the answer is sampled over a window; an unreachable API gives `active=None`, never False.
        """
        wanted = {v.removeprefix("~") for v in volumes}
        spec = self.pools[0] if pool is None else self._pool(pool)
        cluster = next(c for c in self.clusters if c.endpoint == spec.endpoint)
        n = samples or self.config.io_samples
        seen: set[str] = set()
        for _ in self._spaced(n, self.config.io_window if window is None else window):
            sample = read_active_requests(cluster.conn, host.client_id)
            if sample.volumes is None:
                return Activity(None, frozenset(seen), f"StorPool API: {sample.reason}")
            seen.update(v for v in (r.removeprefix("~") for r in sample.volumes) if v in wanted)
            if seen:
                return Activity(True, frozenset(seen), f"I/O on {', '.join(sorted(seen))}")
        return Activity(False, frozenset(), f"no I/O on the VM's volumes in {n} samples")

    def _pool(self, key: str) -> PoolSpec:
        for p in self.pools:
            if key in (p.uuid, p.name):
                return p
        raise ValueError(f"unknown pool {key!r}")


@dataclass
class RoundStats:
    """What one round cost, for the benchmark and the CLI's --json output."""

    hosts: int
    calls: int
    seconds: float
    verdicts: dict[str, int] = field(default_factory=dict)


def timed_check(checker: HeartbeatChecker, hosts: Sequence[HostTarget]) -> tuple[list[HostVerdict], RoundStats]:
    before = checker.calls()
    start = time.monotonic()
    results = checker.check(hosts)
    elapsed = time.monotonic() - start
    counts: dict[str, int] = {}
    for r in results:
        counts[r.verdict.value] = counts.get(r.verdict.value, 0) + 1
    return results, RoundStats(len(hosts), checker.calls() - before, elapsed, counts)
