"""The management-side check against the StorPool emulator, through the real bindings."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cloudstack_storpool.heartbeat.check import CheckConfig, HeartbeatChecker, HostTarget
from cloudstack_storpool.heartbeat.policy import Verdict
from integration.storpool_sim.testing import EmulatorHandle
from integration.tests.heartbeat.support import io_request, pool_of, unreachable_pool

HOSTS = [HostTarget("kvm1", 1), HostTarget("kvm2", 2), HostTarget("kvm3", 3)]
FAST = CheckConfig(io_window=0.05, io_samples=3, api_timeout=2.0)


def verdicts(results: list) -> dict[str, Verdict]:
    return {r.host.name: r.verdict for r in results}


def test_running_clients_are_alive_with_one_call_per_cluster(sp: EmulatorHandle) -> None:
    checker = HeartbeatChecker([pool_of(sp, "p1")], FAST)
    results = checker.check(HOSTS)
    assert verdicts(results) == {"kvm1": Verdict.ALIVE, "kvm2": Verdict.ALIVE, "kvm3": Verdict.ALIVE}
    assert sp.calls["ServicesList"] == 1
    assert sp.calls["ClientActiveRequests"] == 0


def test_down_client_without_io_is_dead(sp: EmulatorHandle) -> None:
    sp.faults.client_down(2)
    checker = HeartbeatChecker([pool_of(sp, "p1")], FAST)
    results = verdicts(checker.check(HOSTS))
    assert results == {"kvm1": Verdict.ALIVE, "kvm2": Verdict.DEAD, "kvm3": Verdict.ALIVE}
    # Only the suspect costs extra: its samples, and one confirming ServicesList for the cluster.
    assert sp.calls["ClientActiveRequests"] == FAST.io_samples
    assert sp.calls["ServicesList"] == 2


def test_absent_client_is_dead(sp: EmulatorHandle) -> None:
    checker = HeartbeatChecker([pool_of(sp, "p1")], FAST)
    [result] = checker.check([HostTarget("ghost", 77)])
    assert result.verdict is Verdict.DEAD
    assert "absent" in result.pools[0].reason


def test_down_client_with_io_in_the_window_is_not_dead(sp: EmulatorHandle) -> None:
    """A client that is listed down but still shows I/O (here: flapping within the window, the
    only way the emulator can show requests of a client it lists as down) is never Dead."""
    sp.faults.client_down(2)
    steps = iter([
        lambda: (sp.faults.client_up(2), sp.faults.set_active_requests(2, [io_request("vm-disk-1")])),
        lambda: sp.faults.client_down(2),
    ])

    def sleep(_seconds: float) -> None:
        next(steps)()

    checker = HeartbeatChecker([pool_of(sp, "p1")], FAST, sleep=sleep)
    [result] = checker.check([HostTarget("kvm2", 2)])
    assert result.verdict is Verdict.UNKNOWN
    assert "I/O" in result.pools[0].reason


def test_client_back_within_the_window_is_alive(sp: EmulatorHandle) -> None:
    sp.faults.client_down(3)
    checker = HeartbeatChecker([pool_of(sp, "p1")], FAST, sleep=lambda _s: sp.faults.client_up(3))
    [result] = checker.check([HostTarget("kvm3", 3)])
    assert result.verdict is Verdict.ALIVE


def test_unreachable_api_is_unknown_for_every_host() -> None:
    checker = HeartbeatChecker([unreachable_pool()], FAST)
    results = checker.check(HOSTS)
    assert set(verdicts(results).values()) == {Verdict.UNKNOWN}
    assert all("unreachable" in r.pools[0].reason for r in results)


@pytest.mark.parametrize("transient", [True, False])
def test_api_errors_are_unknown_for_every_host_even_down_ones(sp: EmulatorHandle, transient: bool) -> None:
    sp.faults.client_down(2)
    sp.faults.fail_next("ServicesList", 1, error="busy" if transient else "internalError", transient=transient)
    checker = HeartbeatChecker([pool_of(sp, "p1")], FAST)
    assert set(verdicts(checker.check(HOSTS)).values()) == {Verdict.UNKNOWN}
    assert sp.calls["ClientActiveRequests"] == 0


def test_active_requests_error_makes_the_suspect_unknown(sp: EmulatorHandle) -> None:
    sp.faults.client_down(2)
    sp.faults.fail_next("ClientActiveRequests", 1, error="timeout", transient=True)
    checker = HeartbeatChecker([pool_of(sp, "p1")], FAST)
    [result] = checker.check([HostTarget("kvm2", 2)])
    assert result.verdict is Verdict.UNKNOWN


def test_confirming_services_list_failure_is_unknown(sp: EmulatorHandle) -> None:
    sp.faults.client_down(2)
    checker = HeartbeatChecker([pool_of(sp, "p1")], FAST,
                               sleep=lambda _s: sp.faults.fail_next("ServicesList", 1, error="busy", transient=True))
    [result] = checker.check([HostTarget("kvm2", 2)])
    assert result.verdict is Verdict.UNKNOWN


def test_recovery_returns_alive(sp: EmulatorHandle) -> None:
    checker = HeartbeatChecker([pool_of(sp, "p1")], FAST)
    sp.faults.client_down(1)
    assert checker.check_host(HOSTS[0]).verdict is Verdict.DEAD
    sp.faults.client_up(1)
    assert checker.check_host(HOSTS[0]).verdict is Verdict.ALIVE


# ---------------------------------------------------------------------------- several pools


@pytest.fixture
def two_clusters(spawn: Callable[..., EmulatorHandle]) -> tuple[EmulatorHandle, EmulatorHandle]:
    return spawn(), spawn()


def test_two_clusters_one_failing_fence_on_any(two_clusters: tuple[EmulatorHandle, EmulatorHandle]) -> None:
    bad, good = two_clusters
    bad.faults.client_down(2)
    pools = [pool_of(bad, "bad"), pool_of(good, "good")]
    checker = HeartbeatChecker(pools, CheckConfig(fence_on_any=True, io_window=0.05))
    result = checker.check_host(HOSTS[1])
    assert [p.verdict for p in result.pools] == [Verdict.DEAD, Verdict.ALIVE]
    assert result.verdict is Verdict.DEAD
    # Either order: one dead pool is enough.
    checker = HeartbeatChecker(list(reversed(pools)), CheckConfig(fence_on_any=True, io_window=0.05))
    assert checker.check_host(HOSTS[1]).verdict is Verdict.DEAD


def test_two_clusters_one_failing_last_pool_decides(two_clusters: tuple[EmulatorHandle, EmulatorHandle]) -> None:
    bad, good = two_clusters
    bad.faults.client_down(2)
    cfg = CheckConfig(fence_on_any=False, io_window=0.05)
    assert HeartbeatChecker([pool_of(bad, "bad"), pool_of(good, "good")], cfg).check_host(HOSTS[1]).verdict \
        is Verdict.ALIVE
    assert HeartbeatChecker([pool_of(good, "good"), pool_of(bad, "bad")], cfg).check_host(HOSTS[1]).verdict \
        is Verdict.DEAD


@pytest.mark.parametrize("fence", [True, False])
def test_unknown_pool_never_becomes_dead(sp: EmulatorHandle, fence: bool) -> None:
    """One cluster unreachable, the other fine: never Dead, whatever the setting and order."""
    for pools in ([unreachable_pool(), pool_of(sp, "good")], [pool_of(sp, "good"), unreachable_pool()]):
        result = HeartbeatChecker(pools, CheckConfig(fence_on_any=fence, io_window=0.05)).check_host(HOSTS[0])
        assert result.verdict is not Verdict.DEAD
    both_gone = HeartbeatChecker([unreachable_pool("a"), unreachable_pool("b")], CheckConfig(fence_on_any=fence))
    assert both_gone.check_host(HOSTS[0]).verdict is Verdict.UNKNOWN


def test_unknown_last_pool_with_a_dead_first_pool(sp: EmulatorHandle) -> None:
    sp.faults.client_down(2)
    pools = [pool_of(sp, "bad"), unreachable_pool()]
    fence_any = HeartbeatChecker(pools, CheckConfig(fence_on_any=True, io_window=0.05)).check_host(HOSTS[1])
    last = HeartbeatChecker(pools, CheckConfig(fence_on_any=False, io_window=0.05)).check_host(HOSTS[1])
    assert fence_any.verdict is Verdict.DEAD  # the dead pool is evidence of its own
    assert last.verdict is Verdict.UNKNOWN  # the last pool cannot tell, so neither can we


def test_two_pools_on_one_cluster_cost_one_services_list(sp: EmulatorHandle) -> None:
    sp.faults.client_down(3)
    checker = HeartbeatChecker([pool_of(sp, "ssd", "ssd"), pool_of(sp, "hdd", "hdd")], FAST)
    assert len(checker.clusters) == 1
    results = checker.check(HOSTS)
    assert [r.verdict for r in results] == [Verdict.ALIVE, Verdict.ALIVE, Verdict.DEAD]
    assert [p.verdict for p in results[2].pools] == [Verdict.DEAD, Verdict.DEAD]
    assert sp.calls["ServicesList"] == 2  # first look + confirmation, shared by both pools
    assert sp.calls["ClientActiveRequests"] == FAST.io_samples


def test_many_hosts_cost_one_call_per_cluster(spawn: Callable[..., EmulatorHandle]) -> None:
    a, b = spawn(clients=range(1, 201)), spawn(clients=range(1, 201))
    checker = HeartbeatChecker([pool_of(a, "a"), pool_of(b, "b")], FAST)
    results = checker.check([HostTarget(f"h{i}", i) for i in range(1, 201)])
    assert {r.verdict for r in results} == {Verdict.ALIVE}
    assert checker.calls() == 2
    assert a.calls["ServicesList"] == b.calls["ServicesList"] == 1


# ---------------------------------------------------------------------------- VM activity


def test_vm_activity_sees_io_on_the_vms_volumes(sp: EmulatorHandle) -> None:
    sp.faults.set_active_requests(1, [io_request("other", 1), io_request("vm-root", 2)])
    checker = HeartbeatChecker([pool_of(sp, "p1")], FAST)
    act = checker.vm_activity(HOSTS[0], ["vm-root", "vm-data"])
    assert act.active is True and act.volumes == frozenset({"vm-root"})
    idle = checker.vm_activity(HOSTS[0], ["vm-data"])
    assert idle.active is False
    assert sp.calls["ClientActiveRequests"] == 1 + FAST.io_samples


def test_vm_activity_unreachable_is_none() -> None:
    act = HeartbeatChecker([unreachable_pool()], FAST).vm_activity(HOSTS[0], ["vm-root"])
    assert act.active is None
