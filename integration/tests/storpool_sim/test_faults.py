"""Fault injection, in-process and over the admin endpoint."""

from __future__ import annotations

import http.client
import threading
import time

import pytest
from storpool import spapi
from storpool.spapi import ApiError

from integration.storpool_sim.testing import EmulatorHandle

from .conftest import raw

GiB = 1 << 30


def _retrying_api(emu: EmulatorHandle, retries: int) -> spapi.Api:
    return spapi.Api(emu.host, emu.port, auth=emu.token, multiCluster=True, transientRetries=retries,
                     transientSleep=lambda _r: 0)


def test_fail_next_n_calls_then_recover(emu: EmulatorHandle) -> None:
    api = emu.api()
    emu.faults.fail_next("VolumesList", 2, error="insufficientResources", descr="no space")
    for _ in range(2):
        with pytest.raises(ApiError) as e:
            api.volumesList()
        assert (e.value.name, e.value.desc, e.value.transient) == ("insufficientResources", "no space", False)
    assert api.volumesList() == []
    assert emu.calls["VolumesList"] == 3


def test_failed_mutation_is_not_applied(emu: EmulatorHandle) -> None:
    emu.faults.fail_next("VolumeCreate", error="busy")
    with pytest.raises(ApiError):
        emu.api().volumeCreate({"name": "v", "size": GiB, "template": "ssd"})
    assert emu.api().volumesList() == []


def test_transient_errors_are_retried_by_the_bindings(emu: EmulatorHandle) -> None:
    emu.faults.fail_next("ServicesList", 2, error="busy", transient=True)
    st = _retrying_api(emu, 3).servicesList()
    assert st.clusterStatus == "running"
    assert emu.calls["ServicesList"] == 3


def test_latency(emu: EmulatorHandle) -> None:
    emu.faults.add_latency("VolumesList", 0.3)
    t0 = time.monotonic()
    emu.api().volumesList()
    assert time.monotonic() - t0 >= 0.3
    emu.faults.add_latency("VolumesList", 0)
    t0 = time.monotonic()
    emu.api().volumesList()
    assert time.monotonic() - t0 < 0.3


def test_hold_answers_what_is_there_when_released(emu: EmulatorHandle) -> None:
    """A held listing waits at a known point: what is made meanwhile is in its answer; the gate
    is one-shot, and reset opens any left."""
    api = emu.api()
    gate = emu.faults.hold("VolumesList")
    answers: list[list[str]] = []
    worker = threading.Thread(target=lambda: answers.append([v.name for v in api.volumesList()]))
    worker.start()
    assert gate.arrived.wait(30)
    emu.api().volumeCreate({"name": "made-meanwhile", "size": GiB, "template": "ssd"})
    assert answers == []  # still held
    gate.release()
    worker.join(30)
    assert answers == [["made-meanwhile"]]
    assert [v.name for v in api.volumesList()] == ["made-meanwhile"]  # one-shot: not held again

    left = emu.faults.hold("VolumesList")
    worker = threading.Thread(target=lambda: answers.append([v.name for v in api.volumesList()]))
    worker.start()
    assert left.arrived.wait(30)
    emu.faults.reset()  # opens the waiting call
    worker.join(30)
    assert answers[-1] == ["made-meanwhile"] and len(answers) == 2


def test_lost_response_after_apply(emu: EmulatorHandle) -> None:
    """The case that makes blind create retries dangerous: applied, but the answer never came."""
    emu.faults.drop_after_apply("VolumeCreate")
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        emu.api().volumeCreate({"name": "lost", "size": GiB, "template": "ssd"})
    assert [v.name for v in emu.api().volumesList()] == ["lost"]
    # the bindings' own retry of the same POST then hits the object it already made
    emu.faults.drop_after_apply("VolumeCreate")
    with pytest.raises(ApiError) as e:
        _retrying_api(emu, 2).volumeCreate({"name": "lost2", "size": GiB, "template": "ssd"})
    assert e.value.name == "objectExists"
    assert emu.calls["VolumeCreate"] == 3


def test_drop_before_apply_changes_nothing(emu: EmulatorHandle) -> None:
    emu.faults.drop_before_apply("VolumeCreate")
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        emu.api().volumeCreate({"name": "never", "size": GiB, "template": "ssd"})
    assert emu.api().volumesList() == []


def test_wildcard_rule_matches_any_query(emu: EmulatorHandle) -> None:
    emu.faults.fail_next("*", error="busy", transient=True)
    with pytest.raises(ApiError) as e:
        emu.api().servicesList()
    assert e.value.transient
    emu.api().servicesList()


def test_client_down_shows_in_services_and_blocks_reassign_wait(emu: EmulatorHandle) -> None:
    api = emu.api()
    api.volumeCreate({"name": "v", "size": GiB, "template": "ssd"})
    emu.faults.client_down(3)
    assert api.servicesList().clients[3].status == "down"
    with pytest.raises(ApiError) as e:
        api.volumesReassignWait({"reassign": [{"volume": "v", "rw": [3]}]})
    assert e.value.name == "busy"
    emu.faults.client_up(3)
    st = api.servicesList().clients[3]
    assert st.status == "running" and st.startTime is not None


def test_admin_endpoint(emu: EmulatorHandle) -> None:
    status, _ = raw(emu, "POST", "/_sim/faults", {"op": "failNext", "query": "VolumesList", "error": "notAllowed"})
    assert status == 200
    with pytest.raises(ApiError) as e:
        emu.api().volumesList()
    assert e.value.name == "notAllowed"
    assert raw(emu, "POST", "/_sim/faults", {"op": "clientStatus", "client": 1, "status": "down"})[0] == 200
    assert emu.api().servicesList().clients[1].status == "down"
    req = {"requestId": "1:2", "requestIdx": 1, "volume": "v", "address": 4096, "size": 512, "op": "read",
           "msecActive": 10}
    assert raw(emu, "POST", "/_sim/faults", {"op": "activeRequests", "client": 2, "requests": [req]})[0] == 200
    assert emu.api().clientActiveRequests(2).requests[0].msecActive == 10
    assert raw(emu, "POST", "/_sim/faults", {"op": "reset"})[0] == 200
    assert emu.api().servicesList().clients[1].status == "running"
    assert emu.api().clientActiveRequests(2).requests == []
    assert raw(emu, "POST", "/_sim/faults", {"op": "bogus"})[0] == 400
    assert raw(emu, "POST", "/_sim/faults", {"op": "clientStatus", "client": 99, "status": "down"})[0] == 400
    assert raw(emu, "POST", "/_sim/faults", {"op": "reset"}, token="wrong")[0] == 401
