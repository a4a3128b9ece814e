"""The StorPool emulator at scale: the driver's create and delete of one
volume, and a VolumeTemplatesStatus, with 100, 1,000 and 10,000 volumes already in the cluster.

Before, every change rewrote the whole state file and VolumeTemplatesStatus searched every
object's children (O(n^2)): a driver create took 10 ms at 100 volumes and 659 ms at 10k. Goal:
create at 10k within 2x of create at 100.

    .venv/bin/python -m benchmarks.bench_sim_scale
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cloudstack_storpool.driver import volumes
from cloudstack_storpool.spconn import StorPoolConn
from integration.stack import LocalStack, new_uuid

SCALES = (100, 1_000, 10_000)
SAMPLES = 20
SIZE = 64 << 20


def _fill(conn: StorPoolConn, template: str, start: int, stop: int) -> None:
    def one(i: int) -> None:
        conn.volume_create(name=f"bench-scale-{i}", size=SIZE, template=template)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(start, stop)))


def _median_ms(fn: object, n: int = SAMPLES) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1000, 2)


def main() -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    rows = []
    try:
        with LocalStack(root, make_xfs=False) as stack:
            ctx = stack.ctx
            pool = stack.pool_id("storpool-primary")
            spec = ctx.pool(pool)
            conn = StorPoolConn.from_pool(spec)
            have = 0
            made: list[str] = []
            for n in SCALES:
                _fill(conn, spec.template, have, n)
                have = n

                def create() -> None:
                    vid = new_uuid()
                    volumes.create(ctx, pool, vid, SIZE)
                    made.append(vid)

                create_ms = _median_ms(create)
                delete_ms = _median_ms(lambda: volumes.delete(ctx, pool, made.pop()))
                status_ms = _median_ms(lambda: conn.api.volumeTemplatesStatus(), 5)
                rows.append({"volumes": n, "driver_create_ms": create_ms, "driver_delete_ms": delete_ms,
                             "templates_status_ms": status_ms})
    finally:
        shutil.rmtree(root, ignore_errors=True)
    first, last = rows[0], rows[-1]
    return {
        "rows": rows,
        "create_ratio_10k_over_100": round(last["driver_create_ms"] / first["driver_create_ms"], 2),
        "goal": "create at 10k within 2x of create at 100 (before: 10 ms -> 659 ms)",
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
