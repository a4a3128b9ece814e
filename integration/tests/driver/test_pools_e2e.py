"""Pool lifecycle end to end: register against the stack's emulator, hold a volume and a cached
template; removal refused while the volume is there, then allowed, deleting the cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudstack_storpool.driver import pools, templates, volumes
from cloudstack_storpool.errors import Conflict, ValidationError
from cloudstack_storpool.poolconfig import load_pools
from integration.stack import LocalStack, new_uuid

pytestmark = pytest.mark.slow

MiB = 1 << 20


def test_register_use_and_remove_a_pool(stack: LocalStack, tmp_path: Path) -> None:
    ctx = stack.ctx
    path = stack.pools_file
    with pytest.raises(ValidationError) as exc:  # same endpoint and template as storpool-primary
        pools.register(ctx, path, name="again", url=stack.sp.pool_url("ssd"))
    assert exc.value.field == "url"
    # CloudStack creates the pool first (createStoragePool) and hands its uuid to the driver.
    cs_pool = stack.cs.model.add_storage_pool("nvme-pool", stack.zone_id)
    info = pools.register(ctx, path, name="nvme-pool", url=stack.sp.pool_url("nvme"), uuid=cs_pool.id,
                          zone=stack.zone_id)
    assert [p.name for p in load_pools(path).pools][-1] == "nvme-pool"
    assert stack.sp.token not in str(info)

    tpl = stack.cs.model.add_template(f"pool-{new_uuid()[:6]}", 8 * MiB)
    image = stack.template_image(tpl.id, 8 * MiB, {0: b"nvme"})
    src = stack.source_of(image)
    vid = new_uuid()
    root = volumes.create_from_template(ctx, "nvme-pool", vid, tpl.id, source=src)
    assert root.template == "nvme"
    d = pools.describe(ctx, "nvme-pool")
    assert (d.volumes, d.cached_templates, d.snapshots) == (1, 1, 0)
    assert d.capacity and d.free and d.used is not None

    with pytest.raises(Conflict, match="cs-vol-"):  # the volume is still there; nothing changes
        pools.remove(ctx, path, "nvme-pool")
    assert templates.cached(ctx, "nvme-pool", tpl.id) is not None
    volumes.delete(ctx, "nvme-pool", vid)
    # Only the cached template is left: it goes with the pool (deleteDataStore deletes the
    # pool's template_spool_ref copies), whether CloudStack still has the template or not.
    cache = templates.cached(ctx, "nvme-pool", tpl.id)
    assert cache is not None
    pools.remove(ctx, path, "nvme-pool")
    assert [p.name for p in load_pools(path).pools] == ["storpool-primary", "storpool-hybrid"]
    left = stack.sp.api().snapshotsList()
    assert not [s for s in left if s.globalId == cache.global_id and not s.deleted]
