"""The agent refuses images that reach outside themselves (a qcow2 with an external data file)
and a failed or cancelled copy detaches exactly what it attached; against the StorPool
emulator on loop devices with real qemu-img."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cloudstack_storpool.agent.commands import execute
from cloudstack_storpool.agent.running import RunControl
from cloudstack_storpool.errors import NotFound, ValidationError
from cloudstack_storpool.spconn import Ref
from integration.tests.agent.conftest import Lab, MiB, read_at

pytestmark = pytest.mark.root

SECRET = b"HOST-ONLY-SECRET-0123456789"


def _qcow2_with_external_data_file(path: Path, data_file: Path, size: int) -> Path:
    """A qcow2 whose header names `data_file` as its external data file (as a hostile template
    on secondary storage would). `create` zeroes the data file it is given, so the image is made
    against a scratch file and then pointed at the real target with `amend`."""
    scratch = path.with_name(path.name + ".scratch")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o",
                    f"data_file={scratch},data_file_raw=on,preallocation=metadata", str(path), str(size)],
                   check=True)
    subprocess.run(["qemu-img", "amend", "-q", "-f", "qcow2", "-o", f"data_file={data_file}", str(path)], check=True)
    scratch.unlink()
    return path


@pytest.mark.parametrize("source_format", [None, "qcow2"])
def test_qcow2_with_an_external_data_file_is_refused(lab: Lab, tmp_path: Path, source_format: str | None) -> None:
    # A host file outside every secondary-storage root: the agent runs as root and must never
    # copy it into a volume a guest can read.
    host_file = tmp_path / "host-only" / "shadow"
    host_file.parent.mkdir()
    host_file.write_bytes(SECRET + bytes(MiB - len(SECRET)))
    _qcow2_with_external_data_file(lab.secondary / "evil.qcow2", host_file, MiB)
    vol = lab.volume(MiB)
    args = {"store": str(lab.secondary), "path": "evil.qcow2", "volume": vol, "source_format": source_format}
    with pytest.raises(ValidationError) as exc:
        execute(lab.ctx(1), "copy_template", args)
    assert exc.value.field == "path"
    assert read_at(lab.backing(vol), 0, len(SECRET)) != SECRET
    assert lab.attached_clients(vol) == []


def test_failed_safe_start_detaches_what_it_attached(lab: Lab) -> None:
    vol = lab.volume(8 * MiB)
    with pytest.raises(NotFound):
        execute(lab.ctx(1), "prepare_start", {"volumes": [vol, "no-such-volume"]})
    assert lab.attached_clients(vol) == []


def test_cancelled_safe_start_detaches_what_it_attached(lab: Lab) -> None:
    vol = lab.volume(8 * MiB)
    other = lab.volume(8 * MiB)
    ctl = RunControl()
    real_progress_check = ctl.check
    calls = 0

    def check() -> None:
        # Cancelled after the first volume was attached, before the second one.
        nonlocal calls
        calls += 1
        if calls == 2:
            ctl.cancel.set()
        real_progress_check()

    ctl.check = check  # type: ignore[method-assign]
    with pytest.raises(Exception, match="cancel"):
        execute(lab.ctx(1), "prepare_start", {"volumes": [vol, other]}, ctl)
    assert lab.attached_clients(vol) == []
    assert lab.attached_clients(other) == []


def test_failed_safe_start_keeps_attachments_it_did_not_make(lab: Lab) -> None:
    vol = lab.volume(8 * MiB)
    lab.conn.attach(Ref("volume", vol), 1, "rw")  # a running VM's disk
    with pytest.raises(NotFound):
        execute(lab.ctx(1), "prepare_start", {"volumes": [vol, "no-such-volume"]})
    assert lab.attached_clients(vol) == [(1, "rw")]
    lab.conn.detach(Ref("volume", vol))
