"""kill -9 of a real agent process in the middle of a snapshot backup: the half-written file it
leaves on secondary storage is removed when the agent starts again and before it retries that
target; another host's partial file of the same target is never touched."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from cloudstack_storpool.agent import qemu_img
from cloudstack_storpool.agent.commands import execute
from cloudstack_storpool.agentapi.client import AgentClient
from integration import processes
from integration.tests.agent.conftest import Lab, MiB

pytestmark = pytest.mark.root

SIZE = 256 * MiB
TARGET = "snapshots/2/7/s1.qcow2"


def _snapshot_with_data(lab: Lab) -> str:
    """A snapshot whose backup takes a while: every MiB written, so qemu-img copies it all."""
    vol = lab.volume(SIZE)
    with open(lab.backing(vol), "r+b") as f:
        for i in range(SIZE // MiB):
            f.write(bytes([i % 251 + 1]) * MiB)
    return lab.conn.snapshot_create(vol).ref


def _partials(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob(".*.part-*"))


def _agent(lab: Lab, tmp_path: Path) -> processes.ServerProcess:
    token_file = tmp_path / "sp.token"
    token_file.write_text(lab.sp.token)
    token_file.chmod(0o600)
    return processes.agent(client_id=1, sp_host=lab.sp.host, sp_port=lab.sp.port, sp_token_file=str(token_file),
                           dev_root=str(lab.sp.dev_root / "1"), mount_root=str(tmp_path / "mnt"),
                           secondary_root=str(lab.secondary), status_file=str(tmp_path / "hb.json"))


def test_kill_9_mid_backup_then_restart_removes_the_partial_file(lab: Lab, tmp_path: Path) -> None:
    snap = _snapshot_with_data(lab)
    dest_dir = lab.secondary / "snapshots" / "2" / "7"
    dest_dir.mkdir(parents=True)
    foreign = dest_dir / ".s1.qcow2.part-2-0123456789ab"  # host 2 is writing the same target
    foreign.write_bytes(b"host 2's copy in progress")
    with _agent(lab, tmp_path) as agent:
        client = AgentClient(agent.url, agent.token, timeout=30)
        threading.Thread(target=lambda: _ignore_failure(lambda: client.backup_snapshot(
            snapshot=snap, store=str(lab.secondary), path=TARGET, timeout=120)), daemon=True).start()
        deadline = time.monotonic() + 60
        while len(_partials(dest_dir)) < 2:
            assert time.monotonic() < deadline, "the backup never started writing"
            time.sleep(0.005)
        agent.kill()
        left = _partials(dest_dir)
        assert len(left) == 2 and not (dest_dir / "s1.qcow2").exists(), left  # what a killed agent leaves

        agent.start()
        deadline = time.monotonic() + 30
        while len(_partials(dest_dir)) > 1:
            assert time.monotonic() < deadline, f"still there after the restart: {_partials(dest_dir)}"
            time.sleep(0.05)
        assert _partials(dest_dir) == [foreign.name]

        client = AgentClient(agent.url, agent.token, timeout=30)
        out = client.backup_snapshot(snapshot=snap, store=str(lab.secondary), path=TARGET, timeout=120)
    assert out["virtual_size"] == SIZE
    assert qemu_img.compare(str(dest_dir / "s1.qcow2"), str(lab.backing(snap)), fmt_a="qcow2", fmt_b="raw")
    assert _partials(dest_dir) == [foreign.name]


def test_a_retry_removes_this_hosts_earlier_partial_of_the_target(lab: Lab) -> None:
    vol = lab.volume(4 * MiB)
    snap = lab.conn.snapshot_create(vol).ref
    dest_dir = lab.secondary / "snapshots" / "3"
    dest_dir.mkdir(parents=True)
    own = dest_dir / ".s.qcow2.part-1-aaaaaaaaaaaa"
    other_target = dest_dir / ".t.qcow2.part-1-aaaaaaaaaaaa"
    other_host = dest_dir / ".s.qcow2.part-3-aaaaaaaaaaaa"
    for p in (own, other_target, other_host):
        p.write_bytes(b"left by a crash")
    execute(lab.ctx(1), "backup_snapshot", {"snapshot": snap, "store": str(lab.secondary), "path": "snapshots/3/s.qcow2"})
    assert sorted(p.name for p in dest_dir.iterdir()) == sorted(["s.qcow2", other_target.name, other_host.name])


def _ignore_failure(call: object) -> None:
    try:
        call()  # type: ignore[operator]
    except Exception:  # the agent is killed under it: its failure is the point
        pass
