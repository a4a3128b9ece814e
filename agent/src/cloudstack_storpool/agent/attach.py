"""Attach StorPool volumes (rw) and snapshots (ro) to this host, and detach them again.

Both directions go through VolumesReassignWait, so when the call returns the StorPool client
on this host has applied the change; we then still wait for the device node to show a
non-zero size, because udev creates the `storpool-byid` link a moment later. Detach of a
device that something still holds open is retried, and forced only as the last resort: a
forced detach under a running qemu is data loss for the guest.

An in-process hold count makes concurrent commands on one object safe: the second user of
an attached device does not attach again, and the device is detached only when the last
user that caused the attach is done.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from cloudstack_storpool.errors import NotFound, ProjectError, SpBusy
from cloudstack_storpool.sprecords import Kind, Mode, SpAttachment, SpObject, SpSnapshot, SpVolume

log = logging.getLogger(__name__)

class SpConn(Protocol):
    """The part of `cloudstack_storpool.spconn.StorPoolConn` the agent uses."""

    def volume(self, name: str) -> SpVolume | None: ...

    def snapshot(self, name: str) -> SpSnapshot | None: ...

    def attachments(self) -> list[SpAttachment]: ...

    def attach(self, obj: SpObject, client: int, mode: Mode = "rw", *, timeout: int | None = None) -> None: ...

    def detach(self, objs: SpObject, client: int | list[int] | Literal["all"] = "all", *, force: bool = False) -> bool: ...

    def volume_update(self, name: str, *, size: int | None = None) -> Any: ...


class AttachError(ProjectError):
    code = "attach"


# The connection layer's record of a volume or snapshot (`kind`, `ref`, `global_id`, `size`).
StorPoolObject = SpObject


@dataclass(frozen=True)
class Attachment:
    object: StorPoolObject
    device: str
    attached_here: bool  # True when this call made the attachment (and so must undo it)


def lookup(conn: SpConn, name: str, kind: Kind | None = None) -> StorPoolObject:
    """Find a volume or snapshot by name or `~globalId`; they share one namespace."""
    kinds: tuple[Kind, ...] = (kind,) if kind else ("volume", "snapshot")
    for k in kinds:
        obj = conn.volume(name) if k == "volume" else conn.snapshot(name)
        if obj is not None:
            return obj
    raise NotFound(f"StorPool {' or '.join(kinds)} {name!r} does not exist")


def attachments_of(conn: SpConn, obj: StorPoolObject) -> list[SpAttachment]:
    """Current attachments of one object (matched by global id: names can be empty or change)."""
    return [a for a in conn.attachments()
            if a.global_id == obj.global_id or (not a.global_id and a.name == obj.name)]


def device_path(dev_root: str, global_id: str) -> str:
    """Where the StorPool client exposes an attached object on a host (the udev by-id link)."""
    return os.path.join(dev_root, "storpool-byid", global_id)


def device_size(path: str) -> int:
    """Size of a block device or file; 0 when it does not exist (yet)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENXIO, errno.ENODEV):
            return 0
        raise
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def wait_for_device(path: str, *, min_size: int = 1, timeout: float = 30.0, interval: float = 0.05) -> int:
    """Wait until `path` exists with at least `min_size` bytes; returns its size."""
    deadline = time.monotonic() + timeout
    while True:
        size = device_size(path)
        if size >= min_size:
            return size
        if time.monotonic() >= deadline:
            state = "missing" if not os.path.exists(path) else f"{size} bytes, want {min_size}"
            raise AttachError(f"device {path} not ready after {timeout:.0f} s ({state})")
        time.sleep(interval)


class _Holds:
    """Per-process reference counts of devices this agent attached."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count: dict[str, int] = {}
        self._obj_locks: dict[str, threading.Lock] = {}

    def object_lock(self, gid: str) -> threading.Lock:
        with self._lock:
            return self._obj_locks.setdefault(gid, threading.Lock())

    def acquire(self, gid: str) -> int:
        with self._lock:
            self._count[gid] = self._count.get(gid, 0) + 1
            return self._count[gid]

    def release(self, gid: str) -> int:
        with self._lock:
            n = self._count.get(gid, 0) - 1
            if n <= 0:
                self._count.pop(gid, None)
                return 0
            self._count[gid] = n
            return n

    def held(self, gid: str) -> int:
        with self._lock:
            return self._count.get(gid, 0)


HOLDS = _Holds()


def attach(
    conn: SpConn,
    obj: StorPoolObject,
    *,
    client_id: int,
    dev_root: str,
    readonly: bool | None = None,
    timeout: float = 60.0,
) -> Attachment:
    """Attach `obj` here (snapshots always ro; volumes rw unless `readonly`). Idempotent:
    an object already attached to this client is only waited for, not re-attached."""
    ro = True if obj.kind == "snapshot" else bool(readonly)
    device = device_path(dev_root, obj.global_id)
    # The StorPool client makes the by-id link when it attaches an object on this host and
    # removes it on detach, so without the link nothing is attached here and the cluster-wide
    # attachment list (one more API call on every copy) has nothing to tell; with it, the list
    # says with which rights and so whether this call must attach (and later detach) at all.
    mine = [a for a in attachments_of(conn, obj) if a.client == client_id] if os.path.lexists(device) else []
    attached_here = False
    if mine and (ro or mine[0].rights == "rw"):
        log.info("%s %s already attached to client %d", obj.kind, obj.ref, client_id)
    else:
        conn.attach(obj, client_id, "ro" if ro else "rw", timeout=max(1, int(timeout)))
        attached_here = not mine
        log.info("attached %s %s to client %d (%s)", obj.kind, obj.ref, client_id, "ro" if ro else "rw")
    try:
        wait_for_device(device, timeout=timeout)
    except AttachError:
        if attached_here:
            _detach_attached(conn, obj, client_id=client_id)
        raise
    return Attachment(object=obj, device=device, attached_here=attached_here)


def detach(
    conn: SpConn,
    obj: StorPoolObject,
    *,
    client_id: int,
    retries: int = 10,
    delay: float = 0.5,
    force_at_end: bool = True,
) -> bool:
    """Detach `obj` from this client. Idempotent (not attached or gone is success).

    A busy device (still open) is retried `retries` times `delay` apart; only then, and only
    when `force_at_end`, is the detach forced. Returns True if a detach was issued.
    """
    if not any(a.client == client_id for a in attachments_of(conn, obj)):
        return False
    return _detach_attached(conn, obj, client_id=client_id, retries=retries, delay=delay, force_at_end=force_at_end)


def _detach_attached(
    conn: SpConn, obj: StorPoolObject, *, client_id: int, retries: int = 10, delay: float = 0.5,
    force_at_end: bool = True,
) -> bool:
    """`detach` of an object known to be attached here (`attached` made the attachment): the
    detach is sent at once, and the attachment list is asked only after a busy answer, when
    something else may have detached it meanwhile."""
    for attempt in range(retries + 1):
        try:
            if attempt > 0 and not any(a.client == client_id for a in attachments_of(conn, obj)):
                return True
            if not conn.detach(obj, client_id):
                return attempt > 0
            log.info("detached %s %s from client %d", obj.kind, obj.ref, client_id)
            return True
        except SpBusy as exc:
            log.warning("detach %s: busy (%s), attempt %d/%d", obj.ref, exc.descr, attempt + 1, retries + 1)
            if attempt < retries:
                time.sleep(delay)
    if not force_at_end:
        raise SpBusy("busy", f"{obj.kind} {obj.ref} still open on client {client_id}")
    log.warning("forcing detach of %s %s from client %d", obj.kind, obj.ref, client_id)
    conn.detach(obj, client_id, force=True)
    return True


@contextmanager
def attached(
    conn: SpConn,
    target: str | StorPoolObject,
    *,
    client_id: int,
    dev_root: str,
    kind: Kind | None = None,
    readonly: bool | None = None,
    timeout: float = 60.0,
    detach_retries: int = 10,
) -> Iterator[Attachment]:
    """Attach for the duration of a block; detach afterwards, even on failure, but only if
    this process attached it (a device a VM is using stays attached).

    `target` is a name (looked up here) or an object the caller already looked up, so a
    command that needed the object first does not ask StorPool for it twice.
    """
    obj = target if isinstance(target, StorPoolObject) else lookup(conn, target, kind)
    lock = HOLDS.object_lock(obj.global_id)
    with lock:
        att = attach(conn, obj, client_id=client_id, dev_root=dev_root, readonly=readonly, timeout=timeout)
        # An earlier holder in this process attached it: we share its attachment, and the
        # last holder out detaches.
        owner = att.attached_here or HOLDS.held(obj.global_id) > 0
        if owner:
            HOLDS.acquire(obj.global_id)
    try:
        yield att
    finally:
        if owner:
            with lock:
                if HOLDS.release(obj.global_id) == 0:
                    _detach_attached(conn, obj, client_id=client_id, retries=detach_retries)
