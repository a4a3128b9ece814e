"""The fencing decision table (docs/heartbeat.md), row by row; pure functions, no I/O."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest

from cloudstack_storpool.heartbeat.policy import (
    ClientView,
    IoSample,
    Unreadable,
    Verdict,
    combine,
    find_client,
    first_look,
    suspect_decision,
)

A, D, U = Verdict.ALIVE, Verdict.DEAD, Verdict.UNKNOWN


def client(cid: int, status: str, node: int | None = None) -> SimpleNamespace:
    return SimpleNamespace(id=cid, nodeId=cid if node is None else node, status=status)


@pytest.mark.parametrize(("pools", "fence_any", "last_decides"), [
    ([A], A, A),
    ([D], D, D),
    ([U], U, U),
    ([D, A], D, A),
    ([A, D], D, D),
    ([D, U], D, U),
    ([U, D], D, D),
    ([A, U], A, U),
    ([U, A], A, A),
    ([U, U], U, U),
    ([], U, U),
])
def test_combine_table(pools: list[Verdict], fence_any: Verdict, last_decides: Verdict) -> None:
    assert combine(pools, fence_on_any=True) is fence_any
    assert combine(pools, fence_on_any=False) is last_decides


@pytest.mark.parametrize("fence", [True, False])
def test_unknowns_never_combine_into_dead(fence: bool) -> None:
    for n in range(1, 4):
        for combo in itertools.product([A, U], repeat=n):
            assert combine(list(combo), fence_on_any=fence) is not D


def test_find_client_by_id_then_by_node() -> None:
    clients = {5: client(5, "running"), 6: client(6, "down", node=9)}
    assert find_client(clients, 5) == ClientView("running")
    assert find_client(clients, 9) == ClientView("down")
    assert find_client(clients, 7) == ClientView(None)


def test_find_client_conflicting_nodes_is_ambiguous() -> None:
    clients = {10: client(10, "running", node=4), 11: client(11, "down", node=4)}
    assert find_client(clients, 4).conflict


@pytest.mark.parametrize(("cluster", "view", "expected"), [
    ("running", ClientView("running"), A),
    ("running", ClientView("down"), None),  # a suspect: I/O samples and a confirming look decide
    ("running", ClientView(None), None),
    ("waiting", ClientView("down"), U),  # without quorum, "down" says nothing
    ("running", ClientView(None, conflict=True), U),
    ("running", ClientView(None, no_clients=True), U),  # an answer without clients says nothing
    ("running", ClientView("restarting"), U),  # a status the policy does not know
])
def test_first_look(cluster: str, view: ClientView, expected: Verdict | None) -> None:
    decision = first_look(cluster, view)
    assert (decision.verdict if decision is not None else None) is expected


@pytest.mark.parametrize(("samples", "confirm", "expected"), [
    ([IoSample(0)] * 3, ClientView("down"), D),
    ([IoSample(0)] * 3, ClientView(None), D),
    ([IoSample(0), IoSample(2)], ClientView("down"), U),  # I/O while "down": inconsistent
    ([IoSample(0), IoSample(None, "timeout")], ClientView("down"), U),
    ([IoSample(0)] * 3, None, U),  # confirmation failed
    ([IoSample(0)] * 3, ClientView("running"), A),  # came back
    ([], ClientView("down"), U),
    # The confirming look at the end of the window:
    ([IoSample(0)] * 3, ClientView(None, no_clients=True), U),  # lists no clients: says nothing
    ([IoSample(0)] * 3, ClientView("restarting"), U),  # a status it does not know
    ([IoSample(0)] * 3, ClientView(None, conflict=True), U),  # two clients disagree
])
def test_suspect_decision(samples: list[IoSample], confirm: ClientView | None, expected: Verdict) -> None:
    assert suspect_decision(ClientView("down"), samples, confirm).verdict is expected


@pytest.mark.parametrize(("clients", "why"), [
    (None, "'clients' is NoneType"),
    ([client(4, "running")], "'clients' is list"),
    ({"4": SimpleNamespace(id=None, nodeId=4, status="running")}, "has no integer id"),
    ({"4": SimpleNamespace(id="4", nodeId=4, status="running")}, "has no integer id"),
    ({"4": SimpleNamespace(id=4, nodeId=4, status=None)}, "has no status"),
    ({"4": SimpleNamespace(id=4, nodeId="x", status="running")}, "nodeId that is not an integer"),
])
def test_a_malformed_clients_table_is_unreadable_not_a_guess(clients: object, why: str) -> None:
    with pytest.raises(Unreadable, match=why):
        find_client(clients, 4)
