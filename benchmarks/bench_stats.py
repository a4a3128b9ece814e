"""Statistics collection at scale: 10k volumes on 2 pools of one StorPool cluster. A capacity
collection must cost one VolumeTemplatesStatus and a volume collection one VolumesSpace per
cluster, however many volumes (the Java plugin's StorPoolStatsCollector does the same); the
time is the driver's side plus the emulator's answer over HTTP. Asking per volume (one
`Volume/<name>` each) is measured on a sample and extrapolated, for the ratio.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from cloudstack_storpool.driver import pools, stats
from integration.stack import LocalStack, new_uuid

VOLUMES = int(os.environ.get("BENCH_STATS_VOLUMES", "10000"))
SAMPLE = 200
MiB = 1 << 20


def _calls(ctx: Any, fn: Any) -> tuple[float, dict[str, int], Any]:
    before = dict(ctx.api_calls())
    t0 = time.perf_counter()
    out = fn()
    elapsed = time.perf_counter() - t0
    after = ctx.api_calls()
    return elapsed, {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}, out


def _populate(stack: LocalStack) -> None:
    """10k volumes straight into the emulator's model (setup, not measured): half per pool."""
    specs = stack.pools().pools
    model = stack.sp.model
    # The emulator writes its whole state and sums the cluster's space at each create (both
    # O(objects)); for a setup of empty volumes once at the end is enough.
    model._save = lambda: None  # type: ignore[method-assign]
    model._check_space = lambda: None  # type: ignore[method-assign]
    try:
        _create(model, specs)
    finally:
        del model._save, model._check_space
    model._save()


def _create(model: Any, specs: Any) -> None:
    for i in range(VOLUMES):
        spec = specs[i % len(specs)]
        vid = new_uuid()
        model.handle("POST", "VolumeCreate", None, {
            "name": f"cs-vol-{vid}", "size": 64 * MiB, "template": spec.template,
            "tags": pools.identity_tags(vid, "volume", spec), "iops": 1000 + i % 7,
        })


def main() -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix="bench-stats-"))
    try:
        with LocalStack(root) as stack:
            return _run(stack)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run(stack: LocalStack) -> dict[str, object]:
    t0 = time.perf_counter()
    _populate(stack)
    setup_s = time.perf_counter() - t0
    ctx = stack.driver_context()
    vol_s, vol_calls, rows = _calls(ctx, lambda: stats.collect_volumes(ctx))
    cap_s, cap_calls, _ = _calls(ctx, lambda: stats.collect_capacity(ctx))
    cache = stats.StatsCache()
    cache.refresh(ctx, "volumes")
    cache.refresh(ctx, "capacity")
    served_s, served_calls, pool_rows = _calls(ctx, lambda: stats.pool_stats(ctx, cache=cache))
    conn = ctx.conn(ctx.pools.pools[0])
    sample = [r.name for r in rows[:SAMPLE]]
    per_s, _per_calls, _ = _calls(ctx, lambda: [conn.volume(n) for n in sample])
    per_volume_total = per_s / len(sample) * len(rows)
    return {
        "volumes": len(rows),
        "pools": len(pool_rows),
        "setup_seconds": round(setup_s, 2),
        "volume collection": {"calls": vol_calls, "seconds": round(vol_s, 3),
                              "volumes_per_second": round(len(rows) / vol_s) if vol_s else None},
        "capacity collection": {"calls": cap_calls, "seconds": round(cap_s, 3)},
        "pool stats from the cache": {"calls": served_calls, "seconds": round(served_s, 4)},
        "per-volume queries instead (extrapolated)": {"calls": len(rows), "seconds": round(per_volume_total, 1)},
        "ratio per-volume / one collection (time)": round(per_volume_total / vol_s, 1) if vol_s else None,
        "java plugin": "1 VolumesSpace and 1 VolumeTemplatesStatus per zone per collection",
        "per pool": {r.name: {"volumes": r.volumes, "provisioned": r.provisioned} for r in pool_rows},
    }


if __name__ == "__main__":
    import json

    print(json.dumps(main(), indent=2))
