"""A template fill whose driver service is killed (kill -9) mid-copy, on the local stack with
the service as a real process: the restarted service's next root volume from that template
takes the dead fill over within twice the liveness limit and leaves nothing behind."""

from __future__ import annotations

import time

import pytest

from cloudstack_storpool.driver import templates
from integration.processes import driver_service
from integration.stack import LocalStack, new_uuid
from integration.tests.driver.test_templates_e2e import new_template, temporary_objects

pytestmark = [pytest.mark.root, pytest.mark.slow]

LIMIT = 6
"""`storpool.template.fill.timeout` for this test: the owner stamps its fill every 1.5 s."""
HELD = 30.0
"""How long the killed service's copy is held at its attach (the emulator's latency)."""


def _watch_fill(stack: LocalStack, fill: str, seconds: float) -> list[str]:
    """The fill's successive `alive` stamps over `seconds` (after waiting for the fill to exist)."""
    seen: list[str] = []
    deadline = time.monotonic() + 30
    while not seen:
        assert time.monotonic() < deadline, f"fill {fill} never appeared"
        found = [o for o in stack.sp.model.objects.values() if o.name == fill and not o.deleted]
        if found:
            seen.append(found[0].tags.get("alive", ""))
        time.sleep(0.1)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        found = [o for o in stack.sp.model.objects.values() if o.name == fill and not o.deleted]
        stamp = found[0].tags.get("alive", "") if found else "gone"
        if stamp != seen[-1]:
            seen.append(stamp)
        time.sleep(0.1)
    return seen


def test_kill_9_mid_fill_then_restart_takes_the_fill_over(stack: LocalStack) -> None:
    stack.settings.set("storpool.template.fill.timeout", LIMIT)  # a file setting: the service reads the stack's file
    tid, src = new_template(stack)
    pool = stack.pool_id()
    fill = templates.fill_name(tid, stack.pools().get(pool))
    first, second = new_uuid(), new_uuid()
    source = {"store": src.store, "path": src.path, "format": src.format}

    def body(vid: str) -> dict[str, object]:
        return {"pool": pool, "volume_uuid": vid, "template_uuid": tid, "source": source,
                "idempotency_key": f"root-{vid}"}

    with driver_service(stack) as svc:
        stack.sp.faults.add_latency("VolumesReassignWait", HELD)  # the agent's copy hangs at its attach
        accepted = svc.post("/v1/volumes/from-template", body(first))
        assert accepted.status_code == 202, accepted.text
        stamps = _watch_fill(stack, fill, LIMIT / 2)  # the copy runs; its owner stamps the fill
        svc.kill()
        stack.sp.faults.add_latency("VolumesReassignWait", 0)
        assert temporary_objects(stack) == [fill]  # the dead fill is still there

        svc.start()
        began = time.monotonic()
        done = svc.run_job("/v1/volumes/from-template", body(second), timeout=4 * LIMIT)
        took = time.monotonic() - began
        assert done["state"] == "succeeded", done
        assert took < 2 * LIMIT, f"the root volume took {took:.1f} s (limit {LIMIT} s)"
        # CloudStack resubmits the request the dead service had accepted: it completes too.
        again = svc.run_job("/v1/volumes/from-template", body(first), timeout=4 * LIMIT)
        assert again["state"] == "succeeded", again

    assert len(stamps) >= 2 and "gone" not in stamps, stamps  # the live owner refreshed its stamp
    assert temporary_objects(stack) == []
    caches = [o for o in stack.sp.model.objects.values()
              if o.tags.get("cs") == "template" and o.tags.get("uuid") == tid and not o.deleted]
    assert len(caches) == 1
    for result in (done["result"], again["result"]):
        vol = stack.sp.api().volumeList(result["name"])[0]
        assert vol.parentName == caches[0].name
    assert not any(a.volume == fill for a in stack.sp.api().attachmentsList())
