"""qemu_img wrapper against the real qemu-img, on plain files (no root needed)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from cloudstack_storpool.agent import qemu_img
from cloudstack_storpool.agent.qemu_img import ConvertOptions, QemuImgCancelled, QemuImgError, QemuImgTimeout, build_convert_args
from integration.needs import need_tool

MiB = 1 << 20


@pytest.fixture(autouse=True)
def _tools() -> None:
    need_tool("qemu-img")


def _raw_with_data(path: Path, size: int, chunks: dict[int, bytes]) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
        for off, data in chunks.items():
            f.seek(off)
            f.write(data)


def test_info_reports_format_and_sizes(tmp_path: Path) -> None:
    raw = tmp_path / "a.raw"
    _raw_with_data(raw, 64 * MiB, {MiB: b"\xab" * 65536})
    q = tmp_path / "a.qcow2"
    qemu_img.convert(str(raw), str(q), src_format="raw", dst_format="qcow2")
    info = qemu_img.info(str(q))
    assert info.format == "qcow2"
    assert info.virtual_size == 64 * MiB
    assert 0 < info.actual_size < 8 * MiB
    assert info.backing_file is None
    assert qemu_img.info(str(raw), fmt="raw").virtual_size == 64 * MiB


def test_convert_round_trip_reports_progress_and_compares_equal(tmp_path: Path) -> None:
    raw = tmp_path / "src.raw"
    _raw_with_data(raw, 32 * MiB, {0: b"x" * 4096, 17 * MiB: os.urandom(MiB)})
    q = tmp_path / "img.qcow2"
    seen: list[float] = []
    qemu_img.convert(str(raw), str(q), src_format="raw", dst_format="qcow2",
                     options=ConvertOptions(compress=True), progress=seen.append)
    assert seen and seen[-1] == 100.0
    assert seen == sorted(seen)
    back = tmp_path / "back.raw"
    back.write_bytes(b"")
    back_size = 32 * MiB
    os.truncate(back, back_size)
    qemu_img.convert(str(q), str(back), src_format="qcow2", dst_format="raw",
                     options=ConvertOptions(existing_target=True, target_is_zero=True))
    assert back.read_bytes() == raw.read_bytes()
    assert qemu_img.compare(str(q), str(back), fmt_a="qcow2", fmt_b="raw")


def test_compare_detects_difference(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _raw_with_data(a, MiB, {4096: b"1"})
    _raw_with_data(b, MiB, {4096: b"2"})
    assert not qemu_img.compare(str(a), str(b), fmt_a="raw", fmt_b="raw")


def test_convert_into_existing_target_keeps_it_sparse(tmp_path: Path) -> None:
    src = tmp_path / "src.raw"
    _raw_with_data(src, 1024 * MiB, {512 * MiB: os.urandom(4 * MiB)})
    dst = tmp_path / "dst.raw"
    dst.write_bytes(b"")
    os.truncate(dst, 1024 * MiB)
    qemu_img.convert(str(src), str(dst), src_format="raw", dst_format="raw",
                     options=ConvertOptions(existing_target=True, parallel_writes=True))
    assert dst.stat().st_size == 1024 * MiB
    assert dst.stat().st_blocks * 512 < 16 * MiB


def test_error_carries_qemu_img_message(tmp_path: Path) -> None:
    with pytest.raises(QemuImgError) as exc:
        qemu_img.convert(str(tmp_path / "missing.qcow2"), str(tmp_path / "out.raw"),
                         src_format="qcow2", dst_format="raw")
    assert "missing.qcow2" in exc.value.message
    assert "No such file" in exc.value.message or "Could not open" in exc.value.message
    assert exc.value.returncode not in (None, 0)
    with pytest.raises(QemuImgError, match="qcow2"):
        raw = tmp_path / "plain.raw"
        _raw_with_data(raw, MiB, {})
        qemu_img.info(str(raw), fmt="qcow2")


def _big_source(tmp_path: Path) -> Path:
    src = tmp_path / "big.raw"
    with open(src, "wb") as f:
        for _ in range(64):
            f.write(os.urandom(MiB))
    return src


def test_cancel_stops_qemu_img(tmp_path: Path) -> None:
    src = _big_source(tmp_path)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(QemuImgCancelled):
        qemu_img.convert(str(src), str(tmp_path / "o.qcow2"), src_format="raw", dst_format="qcow2",
                         options=ConvertOptions(compress=True), cancel=cancel)


def test_timeout_stops_qemu_img(tmp_path: Path) -> None:
    src = _big_source(tmp_path)
    with pytest.raises(QemuImgTimeout):
        qemu_img.convert(str(src), str(tmp_path / "o.qcow2"), src_format="raw", dst_format="qcow2",
                         options=ConvertOptions(compress=True), timeout=0.0)


def test_info_that_hangs_is_stopped_at_its_deadline(tmp_path: Path) -> None:
    """`info` runs on every copy without a polling wait; its deadline must still hold: a FIFO
    with no writer blocks qemu-img's open forever."""
    fifo = tmp_path / "hangs"
    os.mkfifo(fifo)
    with pytest.raises(QemuImgTimeout, match=r"within 0\.3 s"):
        qemu_img.info(str(fifo), fmt="raw", timeout=0.3)


def test_info_reports_qemu_img_error(tmp_path: Path) -> None:
    with pytest.raises(QemuImgError, match="info failed") as exc:
        qemu_img.info(str(tmp_path / "missing.qcow2"), fmt="qcow2")
    assert exc.value.returncode not in (0, None)


def test_convert_args_rules() -> None:
    args = build_convert_args("s", "d", "qcow2", "raw",
                              ConvertOptions(existing_target=True, target_is_zero=True, target_cache="none",
                                             parallel_writes=True))
    assert args[:2] == ["convert", "-p"]
    assert ["-f", "qcow2"] == args[2:4] and ["-O", "raw"] == args[4:6]
    assert "-n" in args and "--target-is-zero" in args and "-W" in args and "-S" in args
    assert args[-2:] == ["s", "d"]
    # -W is never used for qcow2 (ordering matters there); compression needs qcow2.
    assert "-W" not in build_convert_args("s", "d", "raw", "qcow2", ConvertOptions(parallel_writes=True))
    with pytest.raises(ValueError, match="compress"):
        build_convert_args("s", "d", "raw", "raw", ConvertOptions(compress=True))
    with pytest.raises(ValueError, match="target_is_zero"):
        build_convert_args("s", "d", "raw", "raw", ConvertOptions(target_is_zero=True))
    with pytest.raises(ValueError, match="source_format"):
        build_convert_args("s", "d", "vmdk", "raw", ConvertOptions())


def test_version_names_qemu() -> None:
    assert "qemu-img" in qemu_img.version()


# --- LUKS ------------------------------------------------------------------------------------------

PASS = "plain-file-luks-passphrase"


def test_luks_format_check_and_copy_on_a_file(tmp_path: Path) -> None:
    img = tmp_path / "enc.img"
    img.write_bytes(bytes(10 * MiB))
    qemu_img.luks_format(str(img), 8 * MiB, PASS)
    assert qemu_img.is_luks(str(img)) and qemu_img.info(str(img)).format == "luks"
    qemu_img.luks_check(str(img), PASS)
    with pytest.raises(qemu_img.WrongPassphrase) as exc:
        qemu_img.luks_check(str(img), PASS + "x")
    assert PASS not in str(exc.value)
    src = tmp_path / "src.raw"
    _raw_with_data(src, 8 * MiB, {MiB: b"luks payload"})
    qemu_img.luks_convert(str(src), str(img), PASS)
    assert b"luks payload" not in img.read_bytes()
    with pytest.raises(qemu_img.WrongPassphrase):
        qemu_img.luks_convert(str(src), str(img), "another-passphrase")


def test_luks_format_measures_again_when_qemu_cannot_time_pbkdf(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """qemu-img's PBKDF2 timing can read 0 ms on a busy host; the format is tried again."""
    real = qemu_img.qemu_img_binary()
    count = tmp_path / "calls"
    fake = tmp_path / "qemu-img"
    fake.write_text(f"""#!/bin/sh
n=$(cat {count} 2>/dev/null || echo 0); echo $((n + 1)) > {count}
if [ "$n" -lt 2 ]; then echo "qemu-img: x: Unable to get accurate CPU usage" >&2; exit 1; fi
exec {real} "$@"
""")
    fake.chmod(0o755)
    monkeypatch.setattr(qemu_img, "qemu_img_binary", lambda: str(fake))
    img = tmp_path / "enc.img"
    img.write_bytes(bytes(4 * MiB))
    qemu_img.luks_format(str(img), 2 * MiB, PASS)
    # Two faked failures, then the real qemu-img (which may itself hit the timing once more).
    assert int(count.read_text()) >= 3 and qemu_img.is_luks(str(img))
    # Any other failure is not retried.
    count.write_text("5")
    fake.write_text(f"#!/bin/sh\necho $(( $(cat {count}) + 1 )) > {count}\necho 'qemu-img: no space' >&2\nexit 1\n")
    with pytest.raises(QemuImgError, match="no space"):
        qemu_img.luks_format(str(img), 2 * MiB, PASS)
    assert count.read_text().strip() == "6"
