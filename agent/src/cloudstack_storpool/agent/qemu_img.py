"""The one module that runs qemu-img.

Every copy between a StorPool device and secondary storage goes through `convert` here, so
the rules that keep thin volumes thin (never write zero blocks), report progress, honour
cancellation and deadlines, and surface qemu-img's own error text live in one place.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack as contextlib_exit
from contextlib import contextmanager
from dataclasses import dataclass

from cloudstack_storpool.agentapi.command_types import check_format
from cloudstack_storpool.errors import ProjectError

ProgressFn = Callable[[float], None]

_PROGRESS = re.compile(r"\((\d+(?:\.\d+)?)/100%\)")
# How long a terminated qemu-img gets to exit before it is killed: it flushes on SIGTERM.
_TERM_GRACE = 5.0


class QemuImgError(ProjectError):
    """qemu-img failed; `message` is qemu-img's own stderr so operators see the real cause."""

    code = "qemu-img"

    def __init__(self, message: str, *, returncode: int | None = None, op: str = "") -> None:
        super().__init__(f"qemu-img {op} failed: {message}" if op else message)
        self.message = message
        self.returncode = returncode
        self.op = op


class QemuImgCancelled(QemuImgError):
    code = "cancelled"


class QemuImgTimeout(QemuImgError):
    code = "timeout"


@dataclass(frozen=True)
class ImageInfo:
    format: str
    virtual_size: int
    actual_size: int
    backing_file: str | None = None
    data_file: str | None = None
    """A qcow2 external data file: another host path named inside the image."""


def qemu_img_binary() -> str:
    found = shutil.which("qemu-img")
    if found is None:
        raise QemuImgError("qemu-img is not installed on this host (package qemu-utils)")
    return found


def version() -> str:
    """qemu-img's version line; reported in host facts so mismatched hosts are easy to spot."""
    out = subprocess.run([qemu_img_binary(), "--version"], capture_output=True, text=True, timeout=30)
    return out.stdout.splitlines()[0].strip() if out.stdout else ""


def _run_simple(args: Sequence[str], op: str, timeout: float | None) -> subprocess.CompletedProcess[str]:
    """Run a short qemu-img command to its end. The deadline is a timer that kills it, not
    `subprocess.run(timeout=...)`, whose wait polls with sleeps: this runs on every copy (the
    source's `info`) and must return the moment qemu-img exits."""
    proc = subprocess.Popen([qemu_img_binary(), *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    expired = threading.Event()

    def kill() -> None:
        expired.set()
        proc.kill()

    timer = threading.Timer(timeout, kill) if timeout is not None else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        out, err = proc.communicate()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        if timer is not None:
            timer.cancel()
    if expired.is_set():
        raise QemuImgTimeout(f"did not finish within {timeout} s", op=op)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def info(path: str, *, fmt: str | None = None, timeout: float | None = 120.0, force_share: bool = False) -> ImageInfo:
    """Format and sizes of an image or device.

    `fmt` None lets qemu-img probe; only do that for files from secondary storage, never for a
    raw device whose guest-written content could look like a qcow2 header.
    """
    args = ["info", "--output=json"]
    if fmt is not None:
        check_format(fmt, "format")
        args += ["-f", fmt]
    if force_share:
        args.append("-U")
    args.append(path)
    proc = _run_simple(args, "info", timeout)
    if proc.returncode != 0:
        raise QemuImgError(_stderr_message(proc.stderr), returncode=proc.returncode, op="info")
    data = json.loads(proc.stdout)
    return ImageInfo(
        format=str(data["format"]),
        virtual_size=int(data["virtual-size"]),
        actual_size=int(data.get("actual-size", 0)),
        backing_file=data.get("backing-filename"),
        data_file=((data.get("format-specific") or {}).get("data") or {}).get("data-file"),
    )


def compare(
    a: str, b: str, *, fmt_a: str | None = None, fmt_b: str | None = None, strict: bool = False,
    timeout: float | None = 600.0,
) -> bool:
    """True when both images read the same (qemu-img compare exit 0), False when they differ.

    Without `strict`, an image that is longer but zero past the end of the other counts as
    equal, which is what a volume rounded up to StorPool's granularity needs.
    """
    args = ["compare", "-U"]
    if fmt_a:
        args += ["-f", fmt_a]
    if fmt_b:
        args += ["-F", fmt_b]
    if strict:
        args.append("-s")
    args += [a, b]
    proc = _run_simple(args, "compare", timeout)
    if proc.returncode == 0:
        return True
    if proc.returncode == 1:
        return False
    raise QemuImgError(_stderr_message(proc.stderr or proc.stdout), returncode=proc.returncode, op="compare")


def create(path: str, fmt: str, size: int, *, timeout: float | None = 60.0) -> None:
    check_format(fmt, "format")
    proc = _run_simple(["create", "-q", "-f", fmt, path, str(size)], "create", timeout)
    if proc.returncode != 0:
        raise QemuImgError(_stderr_message(proc.stderr), returncode=proc.returncode, op="create")


@dataclass(frozen=True)
class ConvertOptions:
    """How to write the target.

    existing_target: write into an existing device or file (`-n`): qemu-img must not create
      or truncate a StorPool device node.
    target_is_zero: the caller knows the target reads as zeros (a freshly created thin
      volume), so qemu-img skips zero areas entirely instead of writing zeros over them.
    sparse_size: zero detection granularity (`-S`): data blocks that are all zero are not
      written, so a thin volume stays thin.
    compress: qcow2 compressed clusters (backups to secondary storage).
    target_cache / source_cache: `none` (O_DIRECT) keeps a big copy from flushing the host's
      page cache, which matters on a hypervisor; only for block devices.
    parallel_writes: `-W`, out-of-order writes; only safe for raw targets.
    """

    existing_target: bool = False
    target_is_zero: bool = False
    sparse_size: str = "4k"
    compress: bool = False
    target_cache: str | None = None
    source_cache: str | None = None
    parallel_writes: bool = False
    coroutines: int | None = None


def build_convert_args(
    src: str, dst: str, src_format: str, dst_format: str, opts: ConvertOptions
) -> list[str]:
    """The argument list for qemu-img convert; split out so the rules can be unit-tested."""
    check_format(src_format, "source_format")
    check_format(dst_format, "target_format")
    if opts.compress and dst_format != "qcow2":
        raise ValueError("compress: only qcow2 targets can be compressed")
    if opts.target_is_zero and not opts.existing_target:
        raise ValueError("target_is_zero: only meaningful when writing into an existing target")
    args = ["convert", "-p", "-f", src_format, "-O", dst_format, "-S", opts.sparse_size]
    if opts.existing_target:
        args.append("-n")
    if opts.target_is_zero:
        args.append("--target-is-zero")
    if opts.compress:
        args.append("-c")
    if opts.target_cache:
        args += ["-t", opts.target_cache]
    if opts.source_cache:
        args += ["-T", opts.source_cache]
    if opts.parallel_writes and dst_format == "raw" and not opts.compress:
        args.append("-W")
    if opts.coroutines:
        args += ["-m", str(opts.coroutines)]
    args += [src, dst]
    return args


def _stderr_message(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return "; ".join(lines) if lines else "no error message from qemu-img"


def _pump_progress(stream: object, progress: ProgressFn | None) -> None:
    """Read qemu-img's `-p` output: `(NN.NN/100%)` records separated by carriage returns."""
    assert hasattr(stream, "read")
    buf = ""
    last = -1.0
    while True:
        chunk = stream.read(64)
        if not chunk:
            break
        buf += chunk
        *records, buf = re.split(r"[\r\n]", buf)
        for rec in records:
            m = _PROGRESS.search(rec)
            if m is None:
                continue
            pct = float(m.group(1))
            if pct != last and progress is not None:
                last = pct
                try:
                    progress(pct)
                except Exception:  # noqa: S110 - a broken callback must not break the copy
                    pass


def convert(
    src: str,
    dst: str,
    *,
    src_format: str,
    dst_format: str,
    options: ConvertOptions | None = None,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    timeout: float | None = None,
) -> None:
    """Copy `src` into `dst` with explicit formats (never probed: a raw guest disk could be
    made to look like qcow2 and point qemu-img at host files).

    Progress percentages go to `progress`; setting `cancel` or passing `timeout` stops
    qemu-img (SIGTERM, then SIGKILL) and raises. On failure the error carries stderr.
    """
    opts = options or ConvertOptions()
    _run_convert(build_convert_args(src, dst, src_format, dst_format, opts), progress=progress, cancel=cancel,
                 timeout=timeout)


def _run_convert(convert_args: list[str], *, progress: ProgressFn | None, cancel: threading.Event | None,
                 timeout: float | None, pass_fds: tuple[int, ...] = ()) -> None:
    """Run one `qemu-img convert -p` with progress, cancellation and a deadline."""
    args = [qemu_img_binary(), *convert_args]
    proc = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=0,
        pass_fds=pass_fds,
    )
    err_chunks: list[str] = []
    assert proc.stdout is not None and proc.stderr is not None
    t_out = threading.Thread(target=_pump_progress, args=(proc.stdout, progress), daemon=True)
    stderr = proc.stderr
    t_err = threading.Thread(target=lambda: err_chunks.append(stderr.read()), daemon=True)
    t_out.start()
    t_err.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    stopped: list[type[QemuImgError]] = []
    finished = threading.Event()

    def watchdog() -> None:
        # Cancellation and the deadline are watched here, so the caller blocks in wait() and
        # learns of qemu-img's exit at once (a polling wait added up to 50 ms to every copy).
        while not finished.wait(0.1):
            if cancel is not None and cancel.is_set():
                stopped.append(QemuImgCancelled)
            elif deadline is not None and time.monotonic() >= deadline:
                stopped.append(QemuImgTimeout)
            if stopped:
                _stop(proc)
                return

    t_dog = threading.Thread(target=watchdog, daemon=True)
    t_dog.start()
    try:
        proc.wait()
    except BaseException:
        _stop(proc)
        raise
    finally:
        finished.set()
        t_dog.join(timeout=_TERM_GRACE + 5)
        t_out.join(timeout=5)
        t_err.join(timeout=5)
        proc.stdout.close()
        proc.stderr.close()
    if stopped and stopped[0] is QemuImgCancelled:
        raise QemuImgCancelled("cancelled", returncode=proc.returncode, op="convert")
    if stopped and stopped[0] is QemuImgTimeout:
        raise QemuImgTimeout(f"did not finish within {timeout} s", returncode=proc.returncode, op="convert")
    if proc.returncode != 0:
        raise QemuImgError(_stderr_message("".join(err_chunks)), returncode=proc.returncode, op="convert")
    if progress is not None:
        progress(100.0)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=_TERM_GRACE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def fsync_path(path: str) -> None:
    """Make a finished copy durable before it is renamed into place or reported done, and
    (given its directory) the rename itself."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- LUKS (encrypted volumes) ------------------------------------------------------------------
#
# The passphrase reaches qemu-img only through a `secret` object read from a memfd that is passed
# to the child as an inherited descriptor: never in argv (every user can read the process list),
# never in a file on disk, never in an error message (qemu-img's stderr names the secret's id,
# not its value).

LUKS_MAGIC = b"LUKS\xba\xbe"
LUKS_OVERHEAD = 2 << 20
"""Room the LUKS header takes at the start of a volume (qemu-img's default header with 8 key
slots is just under 2 MiB); CloudStack makes encrypted volumes 2 MiB larger for it."""


class WrongPassphrase(QemuImgError):
    code = "invalid"


@contextmanager
def _secret(passphrase: str, secret_id: str) -> Iterator[tuple[str, int]]:
    """A qemu `--object` value naming an inherited memfd holding the passphrase, and that fd."""
    with _memfd(f"cssp-{secret_id}") as fd:
        os.write(fd, passphrase.encode())
        yield f"secret,id={secret_id},file=/dev/fd/{fd},format=raw", fd


def _opts_value(path: str) -> str:
    """A path inside qemu's comma-separated option syntax (a comma is written twice)."""
    return path.replace(",", ",,")


def _luks_opts(path: str, secret_id: str) -> str:
    return f"driver=luks,key-secret={secret_id},file.filename={_opts_value(path)}"


def is_luks(path: str) -> bool:
    """Whether a device or file starts with a LUKS header (read directly: no key needed)."""
    with open(path, "rb") as f:
        return f.read(len(LUKS_MAGIC)) == LUKS_MAGIC


def _unlock_failed(stderr: str) -> bool:
    text = stderr.lower()
    return "invalid password" in text or "cannot unlock" in text


# qemu-img times its first PBKDF2 round (2^15 iterations, a few ms) with the thread's CPU clock,
# which tick-based accounting may not advance at all in that time; qemu-img then gives up with
# this message before writing anything. Each attempt measures afresh and a failed one costs
# milliseconds, so it is tried many times: on this kind of VM one in two or three attempts fails.
_PBKDF_TIMING = "unable to get accurate cpu usage"
_FORMAT_ATTEMPTS = 20


def luks_format(path: str, payload_size: int, passphrase: str, *, timeout: float | None = 120.0) -> None:
    """Write a LUKS header at the start of `path` for a payload of `payload_size` bytes."""
    for attempt in range(_FORMAT_ATTEMPTS):
        with _secret(passphrase, "sec0") as (obj, fd):
            args = [qemu_img_binary(), "create", "-q", "--object", obj, "-f", "luks", "-o", "key-secret=sec0",
                    path, str(payload_size)]
            try:
                proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False,
                                      pass_fds=(fd,))
            except subprocess.TimeoutExpired as exc:
                raise QemuImgTimeout(f"did not finish within {timeout} s", op="create") from exc
        if proc.returncode == 0:
            return
        if _PBKDF_TIMING not in proc.stderr.lower() or attempt == _FORMAT_ATTEMPTS - 1:
            break
    raise QemuImgError(_stderr_message(proc.stderr), returncode=proc.returncode, op="create")


def luks_check(path: str, passphrase: str, *, timeout: float | None = 60.0) -> None:
    """Unlock the LUKS header with the passphrase (WrongPassphrase when it opens no key slot).

    `qemu-img info` opens a LUKS image without unlocking it, so it cannot tell; reading one
    sector through the LUKS driver can. The sector goes to a memfd, never to disk."""
    with _secret(passphrase, "sec0") as (obj, fd), _memfd("cssp-luks-probe") as out:
        args = [qemu_img_binary(), "dd", "-U", "--object", obj, "--image-opts", "-O", "raw", "bs=512", "count=1",
                f"if={_luks_opts(path, 'sec0')}", f"of=/dev/fd/{out}"]
        try:
            proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False,
                                  pass_fds=(fd, out))
        except subprocess.TimeoutExpired as exc:
            raise QemuImgTimeout(f"did not finish within {timeout} s", op="dd") from exc
    if proc.returncode != 0:
        if _unlock_failed(proc.stderr):
            raise WrongPassphrase("the passphrase opens no key slot of the LUKS header", op="dd")
        raise QemuImgError(_stderr_message(proc.stderr), returncode=proc.returncode, op="dd")


@contextmanager
def _memfd(name: str) -> Iterator[int]:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def luks_convert(
    src: str,
    dst: str,
    passphrase: str,
    *,
    src_format: str = "raw",
    src_passphrase: str | None = None,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    timeout: float | None = None,
) -> None:
    """Copy `src` (plain, or LUKS when `src_passphrase` is given) into the LUKS payload of the
    already formatted `dst`. Zero areas are written too: the payload of a fresh header does not
    read as zeros."""
    check_format(src_format, "source_format")
    with contextlib_exit() as stack:
        obj, fd = stack.enter_context(_secret(passphrase, "sec1"))
        fds = [fd]
        args = ["convert", "-p", "--object", obj]
        if src_passphrase is not None:
            sobj, sfd = stack.enter_context(_secret(src_passphrase, "sec0"))
            fds.append(sfd)
            args += ["--object", sobj, "--image-opts"]
            source = _luks_opts(src, "sec0")
        else:
            args += ["-f", src_format]
            source = src
        args += ["-n", "--target-image-opts", source, _luks_opts(dst, "sec1")]
        try:
            _run_convert(args, progress=progress, cancel=cancel, timeout=timeout, pass_fds=tuple(fds))
        except QemuImgError as exc:
            if _unlock_failed(exc.message):
                raise WrongPassphrase("the passphrase opens no key slot of the LUKS header", op="convert") from None
            raise
