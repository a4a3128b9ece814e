"""The service's periodic GC: a template deleted in CloudStack loses its StorPool cache without
anyone calling GC, and the loop survives a failing cycle."""

from __future__ import annotations

import time

import pytest

from cloudstack_storpool.driver import volumes
from cloudstack_storpool.service.periodic import PeriodicGc
from integration.stack import LocalStack, new_uuid

pytestmark = pytest.mark.root


def test_cache_of_a_deleted_template_goes_by_itself(stack: LocalStack) -> None:
    tmpl = next(t for t in stack.cs.model.templates.values() if t.name == "tiny-linux")
    image = stack.template_image(tmpl.id, tmpl.size, {0: b"x"})
    volumes.create_from_template(stack.ctx, "storpool-primary", new_uuid(), tmpl.id, source=stack.source_of(image))
    conn = stack.ctx.conn("storpool-primary")

    def cached() -> int:
        return len(conn.find_snapshots({"uuid": tmpl.id, "cs": "template"}))

    assert cached() == 1
    # One failing cycle first (StorPool refuses the listing), then normal ones.
    stack.sp.faults.fail_next("SnapshotsList", 1, error="notAllowed")
    periodic = PeriodicGc(stack.ctx, interval=lambda: 0.2).start()
    try:
        time.sleep(0.6)
        assert cached() == 1, "a template CloudStack still has keeps its cache"
        stack.cs.model.delete_template(tmpl.id, forced=True)
        deadline = time.monotonic() + 10
        while cached() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert cached() == 0
        assert periodic.runs >= 2
        assert stack.sp.faults.take_error("SnapshotsList") is None, "no cycle met the injected failure"
    finally:
        periodic.close()
    assert not periodic._thread or not periodic._thread.is_alive()
