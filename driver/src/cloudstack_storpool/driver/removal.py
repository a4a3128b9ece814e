"""Removing StorPool snapshots that a host may still hold attached.

An agent cut off mid-copy, or a host that ran a VM last, may leave a snapshot attached; a
plain delete would then fail. Volume snapshots, VM-snapshot members and caches undone after a
failed secondary copy are all removed the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cloudstack_storpool.spconn import Ref

if TYPE_CHECKING:
    from cloudstack_storpool.spconn import StorPoolConn


def drop_snapshot(conn: StorPoolConn, name: str) -> bool:
    """Force-detach from every host, then delete; already gone is fine. True when it existed."""
    conn.detach(Ref("snapshot", name), force=True)
    return conn.snapshot_delete(name, missing_ok=True)
