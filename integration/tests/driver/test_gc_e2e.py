"""Template-cache garbage collection end to end: a template deleted in the CloudStack simulator
loses its cached snapshots on both pools; a template still in use keeps its cache; a dry run
changes nothing; volumes cloned from a collected cache keep their data."""

from __future__ import annotations

import pytest

from cloudstack_storpool.driver import gc, templates, volumes
from integration.cloudstack_sim.model import ApiError
from integration.stack import LocalStack, new_uuid

pytestmark = [pytest.mark.root, pytest.mark.slow]

MiB = 1 << 20


def test_gc_follows_template_deletion_on_every_pool(stack: LocalStack) -> None:
    model = stack.cs.model
    pools = [p.uuid for p in stack.pools().pools]
    assert len(pools) == 2
    gone = model.add_template(f"gone-{new_uuid()[:6]}", 16 * MiB)
    used = model.add_template(f"used-{new_uuid()[:6]}", 16 * MiB)
    sources = {}
    for t in (gone, used):
        image = stack.template_image(t.id, 16 * MiB, {0: t.id.encode()})
        sources[t.id] = stack.source_of(image)
    model.add_vm(f"vm-{new_uuid()[:6]}", template_id=used.id, state="Stopped")
    clones = {}
    for t in (gone, used):
        for pool in pools:
            clones[(t.id, pool)] = volumes.create_from_template(stack.ctx, pool, new_uuid(), t.id, source=sources[t.id])

    model.delete_template(gone.id)
    with pytest.raises(ApiError):
        model.delete_template(used.id)  # CloudStack refuses: a VM uses it

    objects_before = {o.gid for o in stack.sp.model.objects.values() if not o.deleted}
    dry = gc.run(stack.ctx, dry_run=True)
    assert {o.gid for o in stack.sp.model.objects.values() if not o.deleted} == objects_before
    assert dry.done == []
    assert {(a.kind, a.uuid, a.pool) for a in dry.planned} == {(gc.CACHED_TEMPLATE, gone.id, p) for p in pools}
    assert dry.kept_templates >= 2

    report = gc.run(stack.ctx)
    assert sorted(report.done) == sorted(a.name for a in dry.planned)
    assert report.errors == {}
    for pool in pools:
        assert templates.cached(stack.ctx, pool, gone.id) is None
        assert templates.cached(stack.ctx, pool, used.id) is not None
    # The volumes made from the collected cache still read the template.
    for pool in pools:
        v = clones[(gone.id, pool)]
        assert stack.sp.read_object(v.global_id, 0, 36) == gone.id.encode()
    # Nothing left to do.
    assert gc.run(stack.ctx).planned == []
