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
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

MiB = 1 << 20
VIRTUAL = 2048 * MiB
DATA_CHUNKS = 8
CHUNK = 32 * MiB  # 256 MiB of data spread over a 2 GiB disk
ROUNDS = 2


def _losetup(path: Path) -> str:
    return subprocess.run(["losetup", "--find", "--show", str(path)], check=True, capture_output=True,
                          text=True).stdout.strip()


def _sparse(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)


def _make_image(work: Path) -> tuple[Path, Path]:
    """The template (qcow2) and the same data as a plain file for dd."""
    raw = work / "data.raw"
    _sparse(raw, VIRTUAL)
    blob = work / "blob.bin"
    with open(raw, "r+b") as f, open(blob, "wb") as b:
        for i in range(DATA_CHUNKS):
            data = os.urandom(CHUNK)
            f.seek(i * (VIRTUAL // DATA_CHUNKS) + 3 * MiB)
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


def _time_into_loop(work: Path, kind: str, command: Callable[[str], list[str]]) -> float:
    """`command(device)` + sync, timed, writing into a fresh loop device over a sparse file."""
    target = work / f"{kind}-{uuid.uuid4().hex[:6]}.img"
    _sparse(target, VIRTUAL)
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


def _time_plain_qemu_img(work: Path, qcow: Path) -> float:
    return _time_into_loop(work, "plain", lambda dev: ["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(qcow), dev])


def _time_dd(work: Path, blob: Path) -> float:
    return _time_into_loop(work, "dd", lambda dev: ["dd", f"if={blob}", f"of={dev}", "bs=4M", "oflag=direct", "status=none"])


def _time_agent(work: Path, qcow: Path) -> tuple[float, int]:
    from cloudstack_storpool.agent.commands import Context, execute
    from cloudstack_storpool.agent.hostconfig import HostConfig
    from cloudstack_storpool.spconn import StorPoolConn
    from integration.storpool_sim.testing import run_emulator

    sec = work / "secondary"
    sec.mkdir(exist_ok=True)
    if not (sec / "tmpl.qcow2").exists():
        shutil.copy(qcow, sec / "tmpl.qcow2")
    run = uuid.uuid4().hex[:6]
    with run_emulator(work / f"sp-{run}", work / f"dev-{run}", use_loop=True) as sp:
        conn = StorPoolConn(sp.host, sp.port, sp.token)
        host = HostConfig(client_id=1, dev_root=str(sp.dev_root / "1"), secondary_roots=(str(sec),))
        vol = conn.volume_create(name=f"bench-{run}", size=VIRTUAL, template="ssd").ref
        _drop_caches()
        t0 = time.perf_counter()
        execute(Context(host=host, conn=conn), "copy_template",
                {"store": str(sec), "path": "tmpl.qcow2", "volume": vol})
        subprocess.run(["sync"], check=True)
        elapsed = time.perf_counter() - t0
        allocated = sp.object_file(vol.removeprefix("~")).stat().st_blocks * 512
    return elapsed, allocated


def main() -> dict[str, object]:
    if os.geteuid() != 0 or shutil.which("losetup") is None or shutil.which("qemu-img") is None:
        return {"skipped": "needs root, losetup and qemu-img (loop-device targets)"}
    data_bytes = DATA_CHUNKS * CHUNK
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp:
        work = Path(tmp)
        qcow, blob = _make_image(work)
        agent_t, plain_t, dd_t = [], [], []
        allocated = 0
        for _ in range(ROUNDS):
            t, allocated = _time_agent(work, qcow)
            agent_t.append(t)
            plain_t.append(_time_plain_qemu_img(work, qcow))
            dd_t.append(_time_dd(work, blob))
    agent_s, plain_s, dd_s = min(agent_t), min(plain_t), min(dd_t)

    def mbps(seconds: float) -> float:
        return round(data_bytes / MiB / seconds, 1)

    return {
        "benchmark": "agent template copy (qcow2 -> StorPool volume on a loop device)",
        "image_virtual_mib": VIRTUAL // MiB,
        "image_data_mib": data_bytes // MiB,
        "rounds": ROUNDS,
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


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
