"""Host heartbeat through the driver: hosts and their StorPool client ids from CloudStack, the
fence setting from the host's zone, verdicts from the emulator."""

from __future__ import annotations

import pytest

from cloudstack_storpool.driver import hosts, pools
from cloudstack_storpool.errors import NotFound
from integration.stack import LocalStack

pytestmark = pytest.mark.root


def verdicts(stack: LocalStack, **kw: object) -> dict[str, str]:
    return {h.host: h.verdict for h in hosts.check_hosts(stack.ctx, io_window=0.2, **kw)}  # type: ignore[arg-type]


def test_alive_dead_and_recovered(stack: LocalStack) -> None:
    assert verdicts(stack) == {"kvm1": "alive", "kvm2": "alive"}
    stack.sp.faults.client_down(2)
    assert verdicts(stack) == {"kvm1": "alive", "kvm2": "dead"}
    stack.sp.faults.set_client_status(2, "running")
    assert verdicts(stack) == {"kvm1": "alive", "kvm2": "alive"}


def test_unreachable_api_is_unknown_never_dead(stack: LocalStack) -> None:
    stack.sp.faults.client_down(2)
    stack.sp.faults.fail_next("ServicesList", 10, error="busy", transient=True)
    assert set(verdicts(stack).values()) == {"unknown"}


def test_fence_setting_is_read_from_the_zone(stack: LocalStack) -> None:
    zone = stack.zone_id
    stack.cloudstack.update_configuration(hosts.FENCE_SETTING, "true", zone_id=zone)
    stack.settings.invalidate()
    result = hosts.check_hosts(stack.ctx, io_window=0.2)
    assert {h.fence_on_any for h in result} == {True}
    kvm1 = next(h for h in stack.cs.model.hosts.values() if h.name == "kvm1")
    assert [h.host for h in hosts.check_hosts(stack.ctx, host_ids=[kvm1.id], io_window=0.2)] == ["kvm1"]
    with pytest.raises(NotFound):
        hosts.check_hosts(stack.ctx, host_ids=["3f8e0a4e-0000-4000-8000-00000000dead"])


def test_list_pools_needs_no_storpool_call(stack: LocalStack) -> None:
    before = sum(stack.sp.calls.values())
    listed = pools.list_pools(stack.ctx)
    assert {p.name for p in listed} == {"storpool-primary", "storpool-hybrid"}
    assert sum(stack.sp.calls.values()) == before
