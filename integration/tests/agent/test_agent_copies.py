"""The agent's copies against the StorPool emulator on loop devices, with real qemu-img."""

from __future__ import annotations

import os
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudstack_storpool.agent import qemu_img
from cloudstack_storpool.agent.attach import attached, detach, lookup
from cloudstack_storpool.agent.commands import execute
from cloudstack_storpool.agent.qemu_img import QemuImgError
from cloudstack_storpool.agent.running import RunControl
from cloudstack_storpool.agent.server import AgentServer, serve_in_thread
from cloudstack_storpool.agentapi.client import AgentClient, AgentRequestError
from cloudstack_storpool.errors import SpBusy
from cloudstack_storpool.spconn import Ref
from integration.tests.agent.conftest import GiB, Lab, MiB, make_qcow2, read_at

pytestmark = pytest.mark.root

TOKEN = "integration-agent-token"


@pytest.fixture
def agent(lab: Lab) -> Iterator[AgentClient]:
    """The real service for client 1 on a loopback port, and a driver-side client for it."""
    srv = AgentServer(("127.0.0.1", 0), TOKEN, lambda: lab.ctx(1))
    serve_in_thread(srv)
    try:
        yield AgentClient(srv.url, TOKEN, poll_interval=0.05)
    finally:
        srv.shutdown_all()


def test_template_copy_then_read_back_equals_source(lab: Lab, agent: AgentClient) -> None:
    tdir = lab.secondary / "template" / "tmpl" / "2" / "201"
    tdir.mkdir(parents=True)
    src = make_qcow2(tdir / "t.qcow2", 256 * MiB,
                     [(0xAB, 1 * MiB, 64 * 1024), (0xCD, 100 * MiB, MiB), (0x5A, 256 * MiB - 4096, 4096)])
    vol = lab.volume(128 * MiB)  # smaller than the image: the agent grows it first
    seen: list[float] = []
    out = agent.copy_template(store=str(lab.secondary), path="template/tmpl/2/201/t.qcow2", volume=vol,
                              progress=seen.append, timeout=120)
    assert out["virtual_size"] == 256 * MiB and out["source_format"] == "qcow2"
    assert lookup(lab.conn, vol, "volume").size == 256 * MiB
    assert lab.attached_clients(vol) == []  # what the copy attached, it detached
    assert seen and seen[-1] == 100.0
    backing = lab.backing(vol)
    assert read_at(backing, 1 * MiB, 64 * 1024) == b"\xab" * 65536
    assert read_at(backing, 100 * MiB, MiB) == b"\xcd" * MiB
    assert read_at(backing, 256 * MiB - 4096, 4096) == b"\x5a" * 4096
    assert read_at(backing, 0, MiB) == bytes(MiB)
    assert qemu_img.compare(str(src), str(backing), fmt_a="qcow2", fmt_b="raw")
    # Idempotent: the same request again converges on the same content.
    agent.copy_template(store=str(lab.secondary), path="template/tmpl/2/201/t.qcow2", volume=vol, timeout=120)
    assert qemu_img.compare(str(src), str(backing), fmt_a="qcow2", fmt_b="raw")


def test_raw_image_into_existing_volume(lab: Lab) -> None:
    raw = lab.secondary / "v.raw"
    with open(raw, "wb") as f:
        f.truncate(32 * MiB)
        f.seek(5 * MiB)
        f.write(os.urandom(3 * MiB))
    vol = lab.volume(64 * MiB)  # bigger than the image: untouched beyond it
    execute(lab.ctx(1), "copy_to_volume", {"store": str(lab.secondary), "path": "v.raw", "volume": vol,
                                           "source_format": "raw"})
    assert lookup(lab.conn, vol, "volume").size == 64 * MiB
    assert read_at(lab.backing(vol), 0, 32 * MiB) == raw.read_bytes()


def test_sparse_image_keeps_the_volume_thin(lab: Lab) -> None:
    # 4 GiB of virtual size holding 64 MiB of data in four runs spread over the disk.
    writes = [(0x11 + i, i * GiB + 7 * MiB, 16 * MiB) for i in range(4)]
    make_qcow2(lab.secondary / "big.qcow2", 4 * GiB, writes)
    vol = lab.volume(4 * GiB)
    execute(lab.ctx(1), "copy_template", {"store": str(lab.secondary), "path": "big.qcow2", "volume": vol})
    backing = lab.backing(vol)
    assert backing.stat().st_size == 4 * GiB
    allocated = backing.stat().st_blocks * 512
    assert 64 * MiB <= allocated < 80 * MiB, allocated
    for pattern, off, length in writes:
        assert read_at(backing, off, 4096) == bytes([pattern]) * 4096
        assert read_at(backing, off + length - 4096, 4096) == bytes([pattern]) * 4096


def _volume_with_data(lab: Lab, tmp: Path) -> tuple[str, Path]:
    src = make_qcow2(tmp / "seed.qcow2", 96 * MiB, [(0x77, 3 * MiB, 2 * MiB), (0x99, 90 * MiB, 64 * 1024)])
    os.replace(src, lab.secondary / "seed.qcow2")
    vol = lab.volume(96 * MiB)
    execute(lab.ctx(1), "copy_template", {"store": str(lab.secondary), "path": "seed.qcow2", "volume": vol})
    return vol, lab.secondary / "seed.qcow2"


@pytest.mark.parametrize("compress", [False, True])
def test_snapshot_backup_compares_equal(lab: Lab, agent: AgentClient, tmp_path: Path, compress: bool) -> None:
    vol, _ = _volume_with_data(lab, tmp_path)
    snap = lab.conn.snapshot_create(vol).ref
    out = agent.backup_snapshot(snapshot=snap, store=str(lab.secondary), path="snapshots/2/7/s1.qcow2",
                                compress=compress, timeout=120)
    dest = lab.secondary / "snapshots" / "2" / "7" / "s1.qcow2"
    assert qemu_img.info(str(dest)).format == "qcow2"
    assert out["virtual_size"] == 96 * MiB
    assert qemu_img.compare(str(dest), str(lab.backing(snap)), fmt_a="qcow2", fmt_b="raw")
    assert [p.name for p in dest.parent.iterdir()] == ["s1.qcow2"]  # no temp file left
    assert lab.attached_clients(snap) == []
    # ... and back from secondary into a new, empty volume (the snapshot is gone from StorPool).
    vol2 = lab.volume(96 * MiB)
    agent.copy_to_volume(store=str(lab.secondary), path="snapshots/2/7/s1.qcow2", volume=vol2, timeout=120)
    assert qemu_img.compare(str(dest), str(lab.backing(vol2)), fmt_a="qcow2", fmt_b="raw")


def test_a_copy_costs_one_lookup_one_attach_one_detach(lab: Lab, tmp_path: Path) -> None:
    """Each StorPool call is a round trip on every copy, which small images pay in full: no
    attachment list when this host has no device for the object, none before detaching what
    the copy attached itself."""
    make_qcow2(lab.secondary / "small.qcow2", 8 * MiB, [(0x11, MiB, MiB)])
    vol = lab.volume(8 * MiB)
    snap = lab.conn.snapshot_create(vol).ref
    per_copy = {"Volume": 1, "VolumesReassignWait": 2}
    for command, args in (
        ("copy_template", {"store": str(lab.secondary), "path": "small.qcow2", "volume": vol}),
        ("backup_snapshot", {"store": str(lab.secondary), "path": "b/s.qcow2", "snapshot": snap}),
    ):
        lab.conn.calls.clear()
        execute(lab.ctx(1), command, args)
        expected = per_copy if command == "copy_template" else {"Snapshot": 1, "VolumesReassignWait": 2}
        assert dict(lab.conn.calls) == expected, command
    assert lab.attached_clients(vol) == [] and lab.attached_clients(snap) == []


def test_volume_copied_out_as_raw(lab: Lab, tmp_path: Path) -> None:
    vol, seed = _volume_with_data(lab, tmp_path)
    out = execute(lab.ctx(1), "copy_volume_out",
                  {"volume": "/dev/storpool-byid/" + lab.gid(vol), "store": str(lab.secondary),
                   "path": "volumes/out.raw", "format": "raw"})
    assert out["format"] == "raw"
    assert qemu_img.compare(str(seed), str(lab.secondary / "volumes" / "out.raw"), fmt_a="qcow2", fmt_b="raw")
    assert lab.attached_clients(vol) == []


def _corrupt_qcow2(path: Path) -> None:
    """Point the first L2 entry at an unaligned host offset: `info` still works, reading fails."""
    with open(path, "r+b") as f:
        header = f.read(104)
        l1_offset = struct.unpack(">Q", header[40:48])[0]
        f.seek(l1_offset)
        l2_offset = struct.unpack(">Q", f.read(8))[0] & 0x00FFFFFFFFFFFE00
        assert l2_offset
        f.seek(l2_offset)
        f.write(struct.pack(">Q", 0x8000000000000000 | 0x1234560))


def test_failing_qemu_img_surfaces_its_message_and_leaves_no_attachment(lab: Lab, agent: AgentClient) -> None:
    src = make_qcow2(lab.secondary / "bad.qcow2", 16 * MiB, [(0x42, 0, MiB)])
    _corrupt_qcow2(src)
    assert qemu_img.info(str(src)).format == "qcow2"
    vol = lab.volume(16 * MiB)
    with pytest.raises(QemuImgError) as exc:
        execute(lab.ctx(1), "copy_to_volume", {"store": str(lab.secondary), "path": "bad.qcow2", "volume": vol,
                                               "source_format": "qcow2"})
    assert exc.value.returncode not in (None, 0)
    assert "error while reading" in exc.value.message or "corrupt" in exc.value.message.lower()
    assert lab.attached_clients(vol) == []
    with pytest.raises(AgentRequestError) as exc2:
        agent.copy_to_volume(store=str(lab.secondary), path="bad.qcow2", volume=vol, source_format="qcow2",
                             timeout=60)
    assert exc2.value.code == "qemu-img"
    assert exc.value.message in exc2.value.message
    assert lab.attached_clients(vol) == []


def test_missing_volume_and_missing_image_fail_cleanly(lab: Lab) -> None:
    make_qcow2(lab.secondary / "ok.qcow2", MiB, [])
    with pytest.raises(Exception, match="does not exist"):
        execute(lab.ctx(1), "copy_template", {"store": str(lab.secondary), "path": "ok.qcow2", "volume": "nope"})
    vol = lab.volume(MiB)
    with pytest.raises(Exception, match="does not exist"):
        execute(lab.ctx(1), "copy_template", {"store": str(lab.secondary), "path": "gone.qcow2", "volume": vol})
    assert lab.attached_clients(vol) == []


def test_cancelled_copy_detaches(lab: Lab) -> None:
    make_qcow2(lab.secondary / "c.qcow2", 64 * MiB, [(0x1, 0, 32 * MiB)])
    vol = lab.volume(64 * MiB)
    ctl = RunControl()
    ctl.cancel.set()
    with pytest.raises(Exception, match="cancel"):
        execute(lab.ctx(1), "copy_template", {"store": str(lab.secondary), "path": "c.qcow2", "volume": vol}, ctl)
    assert lab.attached_clients(vol) == []


def test_attached_is_idempotent_and_keeps_foreign_attachments(lab: Lab) -> None:
    host = lab.host(1)
    vol = lab.volume(8 * MiB)
    with attached(lab.conn, vol, client_id=1, dev_root=host.dev_root) as a1:
        assert a1.attached_here and os.path.exists(a1.device)
        with attached(lab.conn, vol, client_id=1, dev_root=host.dev_root) as a2:
            assert not a2.attached_here and a2.device == a1.device
        assert lab.attached_clients(vol) == [(1, "rw")]  # inner exit did not detach
    assert lab.attached_clients(vol) == []
    # Attached by someone else (e.g. a running VM): used, never detached.
    lab.conn.attach(Ref("volume", vol), 1, "rw")
    with pytest.raises(RuntimeError), attached(lab.conn, vol, client_id=1, dev_root=host.dev_root):
        raise RuntimeError("boom")
    assert lab.attached_clients(vol) == [(1, "rw")]
    detach(lab.conn, lookup(lab.conn, vol), client_id=1)
    assert lab.attached_clients(vol) == []
    assert detach(lab.conn, lookup(lab.conn, vol), client_id=1) is False  # idempotent


def test_snapshot_attaches_read_only(lab: Lab) -> None:
    vol = lab.volume(8 * MiB)
    snap = lab.conn.snapshot_create(vol).ref
    with attached(lab.conn, snap, client_id=1, dev_root=lab.host(1).dev_root) as att:
        assert att.object.kind == "snapshot"
        assert lab.attached_clients(snap) == [(1, "ro")]
        # Read-only in the kernel: depending on its version the open or the write fails.
        with pytest.raises(OSError):
            fd = os.open(att.device, os.O_WRONLY)
            try:
                os.write(fd, b"x" * 512)
                os.fsync(fd)
            finally:
                os.close(fd)
    assert lab.attached_clients(snap) == []


def test_detach_retries_while_open_and_forces_only_at_the_end(lab: Lab) -> None:
    host = lab.host(1)
    vol = lab.volume(8 * MiB)
    obj = lookup(lab.conn, vol)
    lab.conn.attach(Ref("volume", vol), 1, "rw")
    fd = os.open(host.device_path(obj.global_id), os.O_RDONLY)
    try:
        with pytest.raises(SpBusy):
            detach(lab.conn, obj, client_id=1, retries=2, delay=0.05, force_at_end=False)
        assert lab.attached_clients(vol) == [(1, "rw")]
        assert detach(lab.conn, obj, client_id=1, retries=1, delay=0.05)
        assert lab.attached_clients(vol) == []
    finally:
        os.close(fd)


def test_cli_run_and_status(lab: Lab, tmp_path: Path) -> None:
    make_qcow2(lab.secondary / "cli.qcow2", 8 * MiB, [(0x3C, MiB, MiB)])
    vol = lab.volume(8 * MiB)
    tokf = tmp_path / "sp.token"
    tokf.write_text(lab.sp.token)
    req = tmp_path / "req.json"
    req.write_text(f'{{"store": "{lab.secondary}", "path": "cli.qcow2", "volume": "{vol}"}}')
    common = ["--client-id", "1", "--sp-host", lab.sp.host, "--sp-port", str(lab.sp.port),
              "--sp-token-file", str(tokf), "--dev-root", lab.host(1).dev_root,
              "--secondary-root", str(lab.secondary)]
    exe = Path(os.environ.get("VIRTUAL_ENV", "/work/main/.venv")) / "bin" / "cloudstack-storpool"
    if not exe.exists():
        exe = Path(__file__).resolve().parents[3] / ".venv" / "bin" / "cloudstack-storpool"
    r = subprocess.run([str(exe), "agent", "run", "copy_template", "--json-in", str(req), "--json", *common],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr + r.stdout
    assert read_at(lab.backing(vol), MiB, MiB) == b"\x3c" * MiB
    bad = tmp_path / "bad.json"
    bad.write_text('{"store": "/etc", "path": "x", "volume": "' + vol + '"}')
    r = subprocess.run([str(exe), "agent", "run", "copy_template", "--json-in", str(bad), "--json", *common],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and '"field": "store"' in r.stdout
    r = subprocess.run([str(exe), "agent", "status", "--json", *common], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert '"reachable": true' in r.stdout and '"client_id": 1' in r.stdout
    assert lab.sp.token not in r.stdout + r.stderr


def test_serve_process_end_to_end(lab: Lab, tmp_path: Path) -> None:
    """The real `agent serve` process: token from a file (never on the command line), a copy
    through AgentClient, clean exit on SIGTERM."""
    import signal
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    agent_tok, sp_tok = tmp_path / "agent.token", tmp_path / "sp.token"
    agent_tok.write_text(TOKEN + "\n")
    sp_tok.write_text(lab.sp.token)
    exe = Path(__file__).resolve().parents[3] / ".venv" / "bin" / "cloudstack-storpool"
    proc = subprocess.Popen(
        [str(exe), "agent", "serve", "--listen", f"127.0.0.1:{port}", "--token-file", str(agent_tok),
         "--client-id", "1", "--sp-host", lab.sp.host, "--sp-port", str(lab.sp.port),
         "--sp-token-file", str(sp_tok), "--dev-root", lab.host(1).dev_root,
         "--secondary-root", str(lab.secondary)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert TOKEN.encode() not in cmdline and lab.sp.token.encode() not in cmdline
        client = AgentClient(f"http://127.0.0.1:{port}", TOKEN, poll_interval=0.05, timeout=5)
        for _ in range(100):
            try:
                facts = client.facts()
                break
            except AgentRequestError:
                time.sleep(0.1)
        else:
            raise AssertionError("agent did not come up")
        assert facts["client_id"] == 1 and facts["storpool"]["reachable"] is True
        src = make_qcow2(lab.secondary / "e2e.qcow2", 16 * MiB, [(0x6B, 2 * MiB, MiB)])
        vol = lab.volume(16 * MiB)
        client.copy_template(store=str(lab.secondary), path="e2e.qcow2", volume=vol, idempotency_key="fill-1",
                             timeout=60)
        assert qemu_img.compare(str(src), str(lab.backing(vol)), fmt_a="qcow2", fmt_b="raw")
        # Same key again: the finished job is returned, nothing is copied twice.
        job = client.start("copy_template", {"store": str(lab.secondary), "path": "e2e.qcow2", "volume": vol,
                                             "timeout": 60}, idempotency_key="fill-1")
        assert job["state"] == "succeeded"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert TOKEN not in out + err and lab.sp.token not in out + err
