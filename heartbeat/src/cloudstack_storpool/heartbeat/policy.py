"""Fencing decisions: what StorPool's answers mean for a suspect host.

Kept free of I/O so the decision table in docs/heartbeat.md is exactly this code and can be
tested row by row. The one rule everything here serves: a host is fenced (its VMs restarted
elsewhere) only on positive evidence that it is gone. "The API did not answer" or "the API
answered something that does not add up" is not evidence, because a live host whose VMs are
restarted elsewhere ends with two writers on one disk, which is far worse than a slow failover.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Verdict(StrEnum):
    """What the storage heartbeat says about a host (per pool, or combined)."""

    ALIVE = "alive"
    DEAD = "dead"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Decision:
    """A verdict with the reason an operator reads in the status table and the logs."""

    verdict: Verdict
    reason: str


# Client statuses as the bindings type them ('running' | 'down'); anything else is unexpected.
RUNNING = "running"
DOWN = "down"
# The cluster's own status: without quorum the list of clients is not authoritative.
CLUSTER_RUNNING = "running"


@dataclass(frozen=True)
class ClientView:
    """One host's client as one ServicesList answer shows it.

    `status` is None when no client of the cluster has the host's id as `id` or `nodeId`.
    `conflict` is set when two clients claim the host and disagree: the answer is ambiguous.
    """

    status: str | None
    conflict: bool = False
    no_clients: bool = False
    """The answer lists no client at all: the bindings give exactly that for a ServicesList
    without (or with an unparsable) `clients` field, so it says nothing about this host."""


class Unreadable(ValueError):
    """A ServicesList answer that does not hold what it must; the text says what is wrong."""


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class ClientIndex:
    """ServicesList's `clients` map indexed once, so a round over many hosts stays linear.

    The Java plugin matches a host on `nodeId`, the host loop on `SP_OURID` (the client id); on a
    normal install both are the same number. An exact id wins; otherwise a client on that node
    counts, and two clients on one node that disagree make the answer ambiguous.

    An entry without an integer id or a textual status, or a `nodeId` that is not an integer,
    makes the whole answer unreadable (`Unreadable`): which client such an entry describes,
    or what it says, is a guess, and no verdict is built on a guess.
    """

    def __init__(self, clients: Mapping[Any, Any]) -> None:
        self._by_id: dict[int, str] = {}
        self._by_node: dict[int, set[str]] = {}
        for key, client in clients.items():
            cid, status = _int(getattr(client, "id", None)), getattr(client, "status", None)
            if cid is None:
                raise Unreadable(f"client entry {key!r} has no integer id")
            if not isinstance(status, str):
                raise Unreadable(f"client {cid} has no status")
            self._by_id[cid] = status
            node = getattr(client, "nodeId", None)
            if node is not None:
                if _int(node) is None:
                    raise Unreadable(f"client {cid} has a nodeId that is not an integer: {node!r}")
                self._by_node.setdefault(node, set()).add(status)

    @classmethod
    def of(cls, clients: Any) -> ClientIndex:
        """The index of a `clients` field as the bindings hand it over (None for `null` or a list)."""
        if not isinstance(clients, Mapping):
            raise Unreadable(f"'clients' is {type(clients).__name__}, not a map of clients")
        return cls(clients)

    def view(self, client_id: int) -> ClientView:
        if not self._by_id:
            return ClientView(None, no_clients=True)
        if client_id in self._by_id:
            return ClientView(self._by_id[client_id])
        on_node = self._by_node.get(client_id)
        if not on_node:
            return ClientView(None)
        if len(on_node) > 1:
            return ClientView(None, conflict=True)
        return ClientView(next(iter(on_node)))


def find_client(clients: Any, client_id: int) -> ClientView:
    """The client of `client_id` in ServicesList's `clients` map (see ClientIndex)."""
    return ClientIndex.of(clients).view(client_id)


def first_look(cluster_status: str, view: ClientView) -> Decision | None:
    """The verdict from one ServicesList alone, or None when the host is a suspect.

    Only a running client settles the question at once; a down or absent one must still show
    no I/O (and still be down at the end of the window) before it can be called dead.
    """
    if view.conflict:
        return Decision(Verdict.UNKNOWN, "two clients claim this host with different statuses")
    if view.status == RUNNING:
        return Decision(Verdict.ALIVE, "client running")
    if view.no_clients:
        return Decision(Verdict.UNKNOWN, "ServicesList lists no clients at all")
    if cluster_status != CLUSTER_RUNNING:
        # Without quorum the cluster's view of its clients is stale; a client "down" there
        # says nothing about the host.
        return Decision(Verdict.UNKNOWN, f"cluster status is {cluster_status!r}, not running")
    if view.status not in (DOWN, None):
        return Decision(Verdict.UNKNOWN, f"unexpected client status {view.status!r}")
    return None


@dataclass(frozen=True)
class IoSample:
    """One ClientActiveRequests answer: the number of live requests, or why there is none."""

    requests: int | None
    error: str = ""


def suspect_decision(first: ClientView, samples: Sequence[IoSample], confirm: ClientView | None) -> Decision:
    """Decide a host whose client looked down or absent.

    Dead needs all of: every I/O sample answered and showed no request, and the re-read at the
    end of the window still shows the client down/absent. A client that comes back in the window
    is alive; anything that contradicts "down" (live I/O, an error, no confirmation) is Unknown.
    """
    what = "absent" if first.status is None else "down"
    if confirm is None:
        return Decision(Verdict.UNKNOWN, f"client {what}, but the confirming ServicesList failed")
    if confirm.conflict:
        return Decision(Verdict.UNKNOWN, "two clients claim this host with different statuses")
    if confirm.status == RUNNING:
        return Decision(Verdict.ALIVE, f"client was {what}, running again within the window")
    if confirm.no_clients:
        return Decision(Verdict.UNKNOWN, f"client {what}, but the confirming ServicesList lists no clients at all")
    if confirm.status not in (DOWN, None):
        return Decision(Verdict.UNKNOWN, f"unexpected client status {confirm.status!r}")
    if not samples:
        return Decision(Verdict.UNKNOWN, f"client {what}, I/O not sampled")
    failed = [s for s in samples if s.requests is None]
    if failed:
        return Decision(Verdict.UNKNOWN, f"client {what}, active requests unreadable: {failed[0].error}")
    busy = max(s.requests or 0 for s in samples)
    if busy:
        return Decision(Verdict.UNKNOWN, f"client {what} but still doing I/O ({busy} active requests)")
    return Decision(Verdict.DEAD, f"client {what}, no I/O in {len(samples)} samples")


def combine(pool_verdicts: Sequence[Verdict], *, fence_on_any: bool) -> Verdict:
    """The host's verdict over its pools, per `kvm.ha.fence.on.storage.heartbeat.failure`.

    true  (fence_on_any): one Dead pool is enough; otherwise Alive if any pool is Alive.
    false: the last pool checked decides, as CloudStack's KVM HA does.
    Neither rule can make Dead out of Unknowns: Dead always comes from a pool that said Dead.
    """
    if not pool_verdicts:
        return Verdict.UNKNOWN
    if fence_on_any:
        if Verdict.DEAD in pool_verdicts:
            return Verdict.DEAD
        if Verdict.ALIVE in pool_verdicts:
            return Verdict.ALIVE
        return Verdict.UNKNOWN
    return pool_verdicts[-1]
