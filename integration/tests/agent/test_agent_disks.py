"""Connect / disconnect of physical disks and LUKS encryption, against the StorPool emulator on
loop devices with the real qemu-img."""

from __future__ import annotations

import logging
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from cloudstack_storpool.agent.commands import execute
from cloudstack_storpool.errors import NotFound, SpBusy, ValidationError
from integration.tests.agent.conftest import Lab, MiB, qemu_io_write, read_at
from integration.tests.argv_watch import ArgvWatch

pytestmark = pytest.mark.root

PASS = "correct-horse-" + uuid.uuid4().hex
MARK = b"PLAINTEXT-MARKER-0123456789abcdef"


def test_connect_is_idempotent_and_keeps_other_hosts(lab: Lab) -> None:
    vol = lab.volume(16 * MiB)
    path = "/dev/storpool-byid/" + lab.gid(vol)
    out = execute(lab.ctx(1), "connect", {"volume": path})
    assert out["attached_here"] is True and out["also_attached_to"] == []
    assert lab.attached_clients(vol) == [(1, "rw")]
    assert os.path.getsize(out["device"]) in (0, 16 * MiB)  # a block device's st_size is 0
    again = execute(lab.ctx(1), "connect", {"volume": path})
    assert again["attached_here"] is False and lab.attached_clients(vol) == [(1, "rw")]
    # A migration's destination attaches while the source keeps the volume.
    dest = execute(lab.ctx(2), "connect", {"volume": vol})
    assert dest["also_attached_to"] == [1]
    assert lab.attached_clients(vol) == [(1, "rw"), (2, "rw")]
    assert execute(lab.ctx(1), "disconnect", {"volume": path})["detached"] is True
    assert lab.attached_clients(vol) == [(2, "rw")]
    assert execute(lab.ctx(1), "disconnect", {"volume": path})["detached"] is False
    execute(lab.ctx(2), "disconnect", {"volume": vol})
    assert lab.attached_clients(vol) == []


def test_connect_of_a_missing_volume_fails_and_disconnect_of_one_succeeds(lab: Lab) -> None:
    with pytest.raises(NotFound):
        execute(lab.ctx(1), "connect", {"volume": "/dev/storpool-byid/no.such.gid"})
    out = execute(lab.ctx(1), "disconnect", {"volume": "/dev/storpool-byid/no.such.gid"})
    assert out["detached"] is False
    assert lab.conn.attachments() == []


def test_disconnect_of_an_open_device_retries_then_forces_only_when_allowed(lab: Lab) -> None:
    vol = lab.volume(8 * MiB)
    dev = execute(lab.ctx(1), "connect", {"volume": vol})["device"]
    fd = os.open(dev, os.O_RDONLY)
    try:
        with pytest.raises(SpBusy):
            execute(lab.ctx(1), "disconnect", {"volume": vol, "retries": 1, "delay": 0.05, "force": False})
        assert lab.attached_clients(vol) == [(1, "rw")]
        out = execute(lab.ctx(1), "disconnect", {"volume": vol, "retries": 1, "delay": 0.05})
    finally:
        os.close(fd)
    assert out["detached"] is True and lab.attached_clients(vol) == []


# --- LUKS ----------------------------------------------------------------------------------------


def _key_file(tmp_path: Path, passphrase: str) -> Path:
    key = tmp_path / f"key-{uuid.uuid4().hex[:6]}"
    fd = os.open(key, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(passphrase)
    return key


def _decrypt(tmp_path: Path, image: Path, passphrase: str, fmt: str = "raw") -> bytes:
    """The plaintext of a LUKS image (the test's own qemu-img call: a key file is fine here)."""
    out = tmp_path / f"plain-{uuid.uuid4().hex[:6]}.raw"
    key = _key_file(tmp_path, passphrase)
    opts = f"driver=luks,key-secret=k,file.driver=file,file.filename={image}" if fmt == "raw" else \
        f"driver=luks,key-secret=k,file.driver=qcow2,file.file.filename={image}"
    proc = subprocess.run(["qemu-img", "convert", "--object", f"secret,id=k,file={key},format=raw", "--image-opts",
                           opts, "-O", "raw", str(out)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    return out.read_bytes()


def test_encrypted_data_disk_root_from_snapshot_clone_and_backup(lab: Lab, tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    size = 16 * MiB
    data = lab.volume(size + 2 * MiB)
    with ArgvWatch(PASS) as watch:
        out = execute(lab.ctx(1), "encrypt_volume", {"volume": data, "passphrase": PASS})
    assert watch.seen_qemu, "the watch never saw qemu-img run"
    assert watch.seen == [], "the passphrase showed in a process list"
    assert out["formatted"] is True and out["payload_size"] == size
    info = subprocess.run(["qemu-img", "info", str(lab.backing(data))], capture_output=True, text=True, check=True)
    assert "file format: luks" in info.stdout
    assert lab.attached_clients(data) == []

    # A root disk from a template's snapshot: the template's content, encrypted.
    tmpl = lab.volume(size)
    qemu_io_write(lab.backing(tmpl), "raw", [(0x5A, 0, MiB)])
    with open(lab.backing(tmpl), "r+b") as f:
        f.seek(3 * MiB)
        f.write(MARK)
    snap = lab.conn.snapshot_create(tmpl, name=f"tmpl-{uuid.uuid4().hex[:6]}").ref
    root = lab.volume(size + 2 * MiB)
    res = execute(lab.ctx(2), "encrypt_volume", {"volume": root, "passphrase": PASS, "source": snap})
    assert res["copied_from"] == snap
    raw = lab.backing(root).read_bytes()
    assert MARK not in raw and raw[:6] == b"LUKS\xba\xbe"
    plain = _decrypt(tmp_path, lab.backing(root), PASS)
    assert plain[:MiB] == bytes([0x5A]) * MiB and plain[3 * MiB:3 * MiB + len(MARK)] == MARK
    with pytest.raises(RuntimeError, match="Invalid password"):
        _decrypt(tmp_path, lab.backing(root), PASS + "-wrong")

    # A snapshot and a clone of the encrypted root are encrypted with the same passphrase.
    rsnap = lab.conn.snapshot_create(root, name=f"root-{uuid.uuid4().hex[:6]}").ref
    clone = lab.conn.volume_create(name=f"clone-{uuid.uuid4().hex[:6]}", parent=rsnap, template="ssd").ref
    assert _decrypt(tmp_path, lab.backing(clone), PASS)[3 * MiB:3 * MiB + len(MARK)] == MARK

    # A backup of the snapshot to secondary storage keeps the ciphertext.
    execute(lab.ctx(1), "backup_snapshot", {"snapshot": rsnap, "store": str(lab.secondary), "path": "b/root.qcow2"})
    backup = lab.secondary / "b" / "root.qcow2"
    assert MARK not in backup.read_bytes()
    assert _decrypt(tmp_path, backup, PASS, fmt="qcow2")[3 * MiB:3 * MiB + len(MARK)] == MARK

    # Running it again with the same passphrase changes nothing; a wrong one is refused by name.
    again = execute(lab.ctx(1), "encrypt_volume", {"volume": data, "passphrase": PASS})
    assert again["formatted"] is False
    header = read_at(lab.backing(data), 0, 2 * MiB)
    with pytest.raises(ValidationError) as exc:
        execute(lab.ctx(1), "encrypt_volume", {"volume": data, "passphrase": "not-" + PASS})
    assert exc.value.field == "passphrase" and PASS not in str(exc.value)
    assert read_at(lab.backing(data), 0, 2 * MiB) == header
    assert lab.attached_clients(data) == [] and lab.attached_clients(root) == []
    assert all(PASS not in r.getMessage() for r in caplog.records)
