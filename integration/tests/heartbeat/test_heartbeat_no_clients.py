"""An answer that lists no client at all is "cannot tell" for the heartbeat.

The bindings validate a ServicesList without a `clients` field (or with a `clients` map they
cannot parse) into an empty map, silently. So an empty map is not evidence that this host's
client is absent: it must never lead to Dead or to a reboot. Shown here with an emulator whose
cluster lists no clients, which the bindings hand over in exactly that shape.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cloudstack_storpool.heartbeat.check import CheckConfig, HeartbeatChecker, HostTarget
from cloudstack_storpool.heartbeat.hostloop import Action, Result
from cloudstack_storpool.heartbeat.policy import Verdict
from integration.storpool_sim.testing import EmulatorHandle
from integration.tests.heartbeat.support import pool_of
from integration.tests.heartbeat.test_heartbeat_hostloop import Hooks, conn_to, make_loop

FAST = CheckConfig(io_window=0.05, io_samples=3, api_timeout=2.0)


def test_the_bindings_turn_a_missing_clients_field_into_an_empty_map(sp: EmulatorHandle) -> None:
    from storpool import spapi

    returns = spapi.Api.servicesList.__globals__["returns"]
    parsed = returns({"clusterStatus": "running", "mgmt": {}, "servers": {}, "bridges": {}, "iscsi": {}})
    assert parsed.clients == {}


def test_no_clients_listed_at_all_is_unknown_not_dead(spawn: Callable[..., EmulatorHandle]) -> None:
    sp = spawn(clients=())
    checker = HeartbeatChecker([pool_of(sp, "p1")], FAST)
    [result] = checker.check([HostTarget("kvm1", 1)])
    assert result.verdict is Verdict.UNKNOWN, result


def test_no_clients_listed_at_all_never_reboots(spawn: Callable[..., EmulatorHandle], tmp_path: Path) -> None:
    sp = spawn(clients=())
    hooks = Hooks()
    state = make_loop(conn_to(sp), tmp_path, hooks, Action.REBOOT, client=1, n=2).run(max_rounds=4)
    assert hooks.reboots == []
    assert state.result is Result.UNKNOWN and state.consecutive_down == 0
