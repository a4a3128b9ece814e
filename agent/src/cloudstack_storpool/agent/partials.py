"""Half-written copies on secondary storage: named so that each agent can find and remove its
own, and only its own.

A copy to secondary storage goes to `.<file>.part-<client id>-<random>` in the target's
directory and is renamed when complete, so CloudStack never sees half a file. An agent killed
mid-copy (kill -9, a host crash) leaves that partial file behind. Secondary storage is shared
by every host of a zone, and another host may be writing its own partial of the very same
target right now, so an agent removes only files carrying its own StorPool client id, and
never one it is still writing: once when it starts (a sweep of its secondary roots and of
the exports still mounted under its mount root) and in a target's directory before each copy
to that target (a retry after a crash finds the previous attempt's file).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import uuid
from collections.abc import Iterator

log = logging.getLogger(__name__)

_writing: set[str] = set()
_lock = threading.Lock()


def _pattern(client_id: int, target: str | None = None) -> re.Pattern[str]:
    base = re.escape(target) if target is not None else r".+"
    return re.compile(rf"^\.{base}\.part-{client_id}-[0-9a-f]{{12}}$")


@contextlib.contextmanager
def partial(dest: str, client_id: int) -> Iterator[str]:
    """A fresh partial file name for `dest`, registered as being written for the duration, and
    removed on the way out unless the caller renamed it into place."""
    tmp = os.path.join(os.path.dirname(dest), f".{os.path.basename(dest)}.part-{client_id}-{uuid.uuid4().hex[:12]}")
    with _lock:
        _writing.add(tmp)
    try:
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        with _lock:
            _writing.discard(tmp)


def remove_own(directory: str, client_id: int, target: str | None = None) -> list[str]:
    """Remove this agent's partial files in `directory` (of `target` only, when given) that no
    copy of this process is writing. Returns the paths removed."""
    wanted = _pattern(client_id, target)
    removed: list[str] = []
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        if not wanted.match(entry.name) or not entry.is_file(follow_symlinks=False):
            continue
        with _lock:
            busy = entry.path in _writing
        if busy:
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.path)
            removed.append(entry.path)
            log.warning("removed %s, a partial copy an earlier run of this agent left behind", entry.path)
    return removed


def sweep(roots: tuple[str, ...], mount_root: str, client_id: int) -> list[str]:
    """At start: remove this agent's partial files under its local secondary roots and under
    every export still mounted below its mount root. Returns the paths removed."""
    tops = list(roots)
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        tops += [e.path for e in os.scandir(mount_root) if e.is_dir(follow_symlinks=False) and os.path.ismount(e.path)]
    removed: list[str] = []
    for top in tops:
        for directory, _dirs, _files in os.walk(top):
            removed += remove_own(directory, client_id)
    return removed
