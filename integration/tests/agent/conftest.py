"""Shared set-up for the agent's integration tests: an emulator on loop devices, one agent
host config per client, and images with known content made with the real qemu tools."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloudstack_storpool.agent.hostconfig import HostConfig
from cloudstack_storpool.agent.running import Context
from cloudstack_storpool.spconn import StorPoolConn
from integration.needs import need, need_root, need_tool
from integration.storpool_sim.dataplane import loop_supported
from integration.storpool_sim.testing import EmulatorHandle, run_emulator

MiB = 1 << 20
GiB = 1 << 30


@dataclass
class Lab:
    sp: EmulatorHandle
    conn: StorPoolConn
    secondary: Path

    def host(self, client_id: int) -> HostConfig:
        return HostConfig(client_id=client_id, dev_root=str(self.sp.dev_root / str(client_id)),
                          mount_root=str(self.secondary.parent / "mnt"), secondary_roots=(str(self.secondary),))

    def ctx(self, client_id: int = 1) -> Context:
        return Context(host=self.host(client_id), conn=self.conn)

    def volume(self, size: int, name: str | None = None) -> str:
        """A fresh volume; returns its `~globalId` name."""
        created = self.conn.volume_create(name=name or f"agent-{uuid.uuid4().hex[:8]}", size=size, template="ssd")
        return created.ref

    def gid(self, ref: str) -> str:
        return ref.removeprefix("~")

    def backing(self, ref: str) -> Path:
        return self.sp.object_file(self.gid(ref))

    def attached_clients(self, ref: str) -> list[tuple[int, str]]:
        gid = self.gid(ref)
        return sorted((a.client, a.rights) for a in self.conn.attachments() if a.global_id == gid)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    need_root()
    need(loop_supported(), "loop devices (/dev/loop-control and losetup)")
    need_tool("qemu-img")
    need_tool("qemu-io")
    sec = tmp_path / "secondary"
    sec.mkdir()
    with run_emulator(tmp_path / "data", tmp_path / "dev", token=f"tok-{uuid.uuid4().hex}", use_loop=True) as sp:
        conn = StorPoolConn(sp.host, sp.port, sp.token, retries=2, backoff=0.05)
        yield Lab(sp=sp, conn=conn, secondary=sec)


def qemu_io_write(path: Path, fmt: str, writes: list[tuple[int, int, int]]) -> None:
    """Write `pattern` bytes at (offset, length) with qemu-io: known content at known offsets."""
    args = ["qemu-io", "-f", fmt]
    for pattern, offset, length in writes:
        args += ["-c", f"write -P {pattern:#x} {offset} {length}"]
    subprocess.run([*args, str(path)], check=True, capture_output=True)


def make_qcow2(path: Path, size: int, writes: list[tuple[int, int, int]]) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), str(size)], check=True)
    qemu_io_write(path, "qcow2", writes)
    return path


def read_at(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)
