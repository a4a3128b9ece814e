"""Template copy throughput of the agent vs plain `qemu-img convert` and vs `dd`, in one run.

All three write into the same kind of target: a loop device over a sparse file (what the
StorPool emulator exposes). The agent's number includes everything a real template fill does
on the host: the StorPool attach through the API, waiting for the device, qemu-img convert,
and the detach. Ratios above 1 mean the agent is faster.

    .venv/bin/python -m benchmarks.bench_agent_copy
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

MiB = 1 << 20
GiB = 1 << 30
CASES = (
    # (name, virtual size, chunks, chunk size): issue 13's small image and a larger one.
    ("small: 64 MiB of data in a 4 GiB image", 4 * GiB, 4, 16 * MiB),
    ("large: 256 MiB of data in a 2 GiB image", 2 * GiB, 8, 32 * MiB),
)
ROUNDS = 3


def _losetup(path: Path) -> str:
    return subprocess.run(["losetup", "--find", "--show", str(path)], check=True, capture_output=True,
                          text=True).stdout.strip()


def _sparse(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)


def _make_image(work: Path, virtual: int, chunks: int, chunk: int) -> tuple[Path, Path]:
    """The template (qcow2) and the same data as a plain file for dd."""
    raw = work / "data.raw"
    _sparse(raw, virtual)
    blob = work / "blob.bin"
    with open(raw, "r+b") as f, open(blob, "wb") as b:
        for i in range(chunks):
            data = os.urandom(chunk)
            f.seek(i * (virtual // chunks) + 3 * MiB)
            f.write(data)
            b.write(data)
    qcow = work / "tmpl.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow)], check=True)
    raw.unlink()
    return qcow, blob


def _drop_caches() -> None:
    subprocess.run(["sync"], check=False)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        pass


def _time_into_loop(work: Path, kind: str, virtual: int, command: Callable[[str], list[str]]) -> float:
    """`command(device)` + sync, timed, writing into a fresh loop device over a sparse file."""
    target = work / f"{kind}-{uuid.uuid4().hex[:6]}.img"
    _sparse(target, virtual)
    dev = _losetup(target)
    try:
        _drop_caches()
        t0 = time.perf_counter()
        subprocess.run(command(dev), check=True)
        subprocess.run(["sync"], check=True)
        return time.perf_counter() - t0
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)
        target.unlink()


def _time_plain_qemu_img(work: Path, qcow: Path, virtual: int) -> float:
    return _time_into_loop(work, "plain", virtual,
                           lambda dev: ["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(qcow), dev])


def _time_dd(work: Path, blob: Path, virtual: int) -> float:
    return _time_into_loop(work, "dd", virtual,
                           lambda dev: ["dd", f"if={blob}", f"of={dev}", "bs=4M", "oflag=direct", "status=none"])


def _time_agent(work: Path, qcow: Path, virtual: int) -> tuple[float, int]:
    from cloudstack_storpool.agent.commands import Context, execute
    from cloudstack_storpool.agent.hostconfig import HostConfig
    from cloudstack_storpool.spconn import StorPoolConn
    from integration.storpool_sim.testing import run_emulator

    sec = work / "secondary"
    sec.mkdir(exist_ok=True)
    shutil.copy(qcow, sec / "tmpl.qcow2")
    run = uuid.uuid4().hex[:6]
    with run_emulator(work / f"sp-{run}", work / f"dev-{run}", use_loop=True) as sp:
        conn = StorPoolConn(sp.host, sp.port, sp.token)
        host = HostConfig(client_id=1, dev_root=str(sp.dev_root / "1"), secondary_roots=(str(sec),))
        vol = conn.volume_create(name=f"bench-{run}", size=virtual, template="ssd").ref
        _drop_caches()
        t0 = time.perf_counter()
        execute(Context(host=host, conn=conn), "copy_template",
                {"store": str(sec), "path": "tmpl.qcow2", "volume": vol})
        subprocess.run(["sync"], check=True)
        elapsed = time.perf_counter() - t0
        allocated = sp.object_file(vol.removeprefix("~")).stat().st_blocks * 512
    return elapsed, allocated


def _case(work: Path, virtual: int, chunks: int, chunk: int) -> dict[str, object]:
    data_bytes = chunks * chunk
    qcow, blob = _make_image(work, virtual, chunks, chunk)
    agent_t, plain_t, dd_t = [], [], []
    allocated = 0
    for _ in range(ROUNDS):
        t, allocated = _time_agent(work, qcow, virtual)
        agent_t.append(t)
        plain_t.append(_time_plain_qemu_img(work, qcow, virtual))
        dd_t.append(_time_dd(work, blob, virtual))
    agent_s, plain_s, dd_s = min(agent_t), min(plain_t), min(dd_t)

    def mbps(seconds: float) -> float:
        return round(data_bytes / MiB / seconds, 1)

    return {
        "image_virtual_mib": virtual // MiB,
        "image_data_mib": data_bytes // MiB,
        "agent_seconds": round(agent_s, 3),
        "plain_qemu_img_seconds": round(plain_s, 3),
        "dd_seconds": round(dd_s, 3),
        "agent_mib_per_s": mbps(agent_s),
        "plain_qemu_img_mib_per_s": mbps(plain_s),
        "dd_mib_per_s": mbps(dd_s),
        "agent_vs_plain_qemu_img": round(plain_s / agent_s, 3),
        "agent_vs_dd": round(dd_s / agent_s, 3),
        "target_allocated_mib": round(allocated / MiB, 1),
    }


def fixed_overhead(work: Path, n: int = 20) -> dict[str, float]:
    """What the agent's qemu-img wrapper adds to one convert, on an image small enough that the
    copy itself is negligible: median of the wrapper minus the same command run bare."""
    from cloudstack_storpool.agent import qemu_img

    src, dst = work / "tiny.qcow2", work / "tiny.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(src), "1M"], check=True)
    bare, wrapped = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(src), str(dst)], check=True)
        bare.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        qemu_img.convert(str(src), str(dst), src_format="qcow2", dst_format="raw")
        wrapped.append(time.perf_counter() - t0)
    b, w = statistics.median(bare), statistics.median(wrapped)
    return {"bare_ms": round(b * 1000, 2), "wrapper_ms": round(w * 1000, 2), "added_ms": round((w - b) * 1000, 2)}


def main() -> dict[str, object]:
    if os.geteuid() != 0 or shutil.which("losetup") is None or shutil.which("qemu-img") is None:
        return {"skipped": "needs root, losetup and qemu-img (loop-device targets)"}
    out: dict[str, object] = {
        "benchmark": "agent template copy (qcow2 -> StorPool volume on a loop device), best of each",
        "rounds": ROUNDS,
        "goal": "agent_vs_plain_qemu_img >= 0.95 for small and large images alike",
    }
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp:
        out["qemu_img wrapper fixed overhead (1 MiB image)"] = fixed_overhead(Path(tmp))
    for name, virtual, chunks, chunk in CASES:
        with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp:
            out[name] = _case(Path(tmp), virtual, chunks, chunk)
    return out


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
