"""What reflinks buy the StorPool emulator: snapshot/clone time and extra disk use.

A 1 GiB volume holding 256 MiB of data is snapshotted, then a volume is created from the snapshot
(`parent`) and another from the live volume (`baseOn`): once on a reflink XFS (a loop mount made
and removed here; needs root and mkfs.xfs) and once on a directory without reflinks (sparse
copies). Prints JSON with the times, the bytes each run added to its filesystem, and ratios.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from integration.storpool_sim.testing import run_emulator
from integration.xfs import can_make_xfs, xfs_mount

MiB = 1 << 20
VOLUME_SIZE = 1 << 30
DATA = 256 * MiB
REPEATS = 3


def _used(path: Path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def run_case(root: Path) -> dict[str, object]:
    """One measured run: fill, then time snapshot, clone from snapshot, clone from live volume."""
    best: dict[str, float] = {}
    extra = 0
    how = None
    for i in range(REPEATS):
        data_dir = root / f"run{i}"
        with run_emulator(data_dir, root / f"dev{i}", use_loop=False) as sp:
            api = sp.api()
            gid = api.volumeCreate({"name": "bench", "size": VOLUME_SIZE, "template": "ssd"}).globalId
            block = os.urandom(MiB)
            fd = os.open(sp.object_file(gid), os.O_WRONLY)
            try:
                for n in range(DATA // MiB):
                    os.pwrite(fd, block, n * (VOLUME_SIZE // (DATA // MiB)))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.sync()
            before = _used(data_dir)
            timings = {}
            t0 = time.perf_counter()
            api.snapshotCreate("bench", {"name": "bench-snap"})
            timings["snapshot_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            api.volumeCreate({"name": "bench-child", "parent": "bench-snap"})
            timings["clone_parent_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            api.volumeCreate({"name": "bench-clone", "baseOn": "bench"})
            timings["clone_baseon_s"] = time.perf_counter() - t0
            os.sync()
            extra = _used(data_dir) - before
            how = "reflink" if sp.emulator.dataplane.reflink else "sparse"
            for key, secs in timings.items():
                best[key] = min(best.get(key, secs), secs)
        shutil.rmtree(data_dir, ignore_errors=True)
    return {"method": how, **{k: round(v, 6) for k, v in best.items()}, "extra_bytes": extra,
            "extra_mib": round(extra / MiB, 2)}


def main() -> dict[str, object]:
    if not can_make_xfs():
        raise SystemExit("bench_sim_reflink needs root and mkfs.xfs (it mounts a loop XFS)")
    xfs_base = Path(tempfile.mkdtemp(prefix="bench-xfs-"))
    try:
        with xfs_mount(xfs_base, 4 << 30) as mnt:
            reflink = run_case(mnt)
    finally:
        shutil.rmtree(xfs_base, ignore_errors=True)
    sparse_root = Path(tempfile.mkdtemp(prefix="bench-sparse-"))
    try:
        sparse = run_case(sparse_root)
    finally:
        shutil.rmtree(sparse_root, ignore_errors=True)

    def ratio(key: str) -> float | None:
        a, b = sparse[key], reflink[key]
        assert isinstance(a, int | float) and isinstance(b, int | float)
        return round(a / b, 1) if b else None

    return {
        "volume_size": VOLUME_SIZE,
        "data_written": DATA,
        "repeats": REPEATS,
        "reflink": reflink,
        "sparse": sparse,
        "ratio_sparse_over_reflink": {
            "snapshot_time": ratio("snapshot_s"),
            "clone_parent_time": ratio("clone_parent_s"),
            "clone_baseon_time": ratio("clone_baseon_s"),
            "extra_bytes": ratio("extra_bytes") if reflink["extra_bytes"] else None,
        },
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
