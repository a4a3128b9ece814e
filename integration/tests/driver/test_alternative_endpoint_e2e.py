"""`sp.enable.alternative.endpoint`: the primary StorPool API address stops answering, and the
driver's operations continue on the pool's alternative endpoint (the switch is logged).
Real bindings against the emulator (one cluster, two API addresses), real `cs` client."""

from __future__ import annotations

import logging

import pytest

from cloudstack_storpool.driver import identity, pools, volumes
from cloudstack_storpool.errors import SpUnreachable
from integration.stack import LocalStack, new_uuid

pytestmark = pytest.mark.root

MiB = 1 << 20


def _enable_alternative(stack: LocalStack, pool_id: str, host: str, port: int, *, enabled: bool = True) -> None:
    url = f"SP_API_HTTP={host}:{port};SP_AUTH_TOKEN={stack.sp.token};SP_TEMPLATE=ssd"
    stack.cloudstack.update_configuration("sp.alternative.endpoint", url, storage_id=pool_id)
    stack.cloudstack.update_configuration("sp.enable.alternative.endpoint", "true" if enabled else "false",
                                          storage_id=pool_id)


def test_operations_continue_on_the_alternative_endpoint(stack: LocalStack, caplog: pytest.LogCaptureFixture) -> None:
    pool_id = stack.pool_id()
    before = volumes.create(stack.ctx, pool_id, new_uuid(), 8 * MiB)
    host, port = stack.sp.emulator.add_endpoint()
    _enable_alternative(stack, pool_id, host, port)
    calls0 = sum(stack.sp.calls.values())

    stack.sp.emulator.stop_listening()
    caplog.set_level(logging.WARNING, logger="cloudstack_storpool.spconn")
    made = volumes.create(stack.ctx, pool_id, new_uuid(), 8 * MiB)  # refused by the primary: re-sent
    assert identity.get(stack.ctx, pool_id, path=made.path).size == 8 * MiB
    assert volumes.delete(stack.ctx, pool_id, before.uuid or "", path=before.path).deleted
    assert pools.describe(stack.ctx, pool_id).volumes == 1
    assert sum(stack.sp.calls.values()) > calls0  # the same cluster answered, through the other address
    # One switch logged, naming the alternative address. (Matched loosely: the process-wide log
    # redactor also masks other tests' one-letter tokens inside words.)
    switches = [r.getMessage() for r in caplog.records
                if r.name == "cloudstack_storpool.spconn" and r.levelno == logging.WARNING and f":{port}" in r.getMessage()]
    assert len(switches) == 1
    assert stack.sp.token not in caplog.text


def test_without_the_setting_an_unreachable_api_is_an_error(stack: LocalStack) -> None:
    pool_id = stack.pool_id()
    host, port = stack.sp.emulator.add_endpoint()
    _enable_alternative(stack, pool_id, host, port, enabled=False)
    stack.sp.emulator.stop_listening()
    with pytest.raises(SpUnreachable):
        volumes.create(stack.driver_context(retries=0), pool_id, new_uuid(), 8 * MiB)
