"""Long copies report progress from qemu-img on the KVM host back to whoever waits (a service
job, a CLI progress bar)."""

from __future__ import annotations

import pytest

from cloudstack_storpool.driver import volumes
from integration.stack import LocalStack, new_uuid

pytestmark = pytest.mark.root

MiB = 1 << 20


def test_template_fill_reports_progress_to_the_caller(stack: LocalStack) -> None:
    tmpl = next(t for t in stack.cs.model.templates.values() if t.name == "tiny-linux")
    image = stack.template_image(tmpl.id, tmpl.size, {0: b"x" * MiB, 60 * MiB: b"y" * MiB})
    seen: list[float] = []
    ctx = stack.ctx.with_progress(seen.append)
    volumes.create_from_template(ctx, "storpool-primary", new_uuid(), tmpl.id, source=stack.source_of(image))
    assert seen, "no progress was reported"
    assert seen == sorted(seen) and seen[-1] == 100.0
    # A cached template copies nothing, so it reports nothing.
    seen.clear()
    volumes.create_from_template(ctx, "storpool-primary", new_uuid(), tmpl.id, source=stack.source_of(image))
    assert seen == []
    assert stack.ctx.progress is None  # the shared context is untouched
