"""StorPool's answers as the heartbeat reads them: a failed call, or an answer it cannot read,
becomes a reason to report, never an exception.

The bindings parse ServicesList into typed objects but keep partial ones when a field is
missing or of another type (`clients: null` or a list becomes None, a client without an id
keeps `id=None`), and raise plain ValueError or KeyError on an HTML error page, truncated JSON
or a `data` that is not an object. A heartbeat that raised on those would crash `heartbeat
status` and leave the host loop's previous `ok` in its status file. Here every such answer is
"cannot tell", with what was wrong as the reason; "cannot tell" never fences and never reboots.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from cloudstack_storpool.errors import StorPoolError
from cloudstack_storpool.heartbeat.policy import ClientIndex, Unreadable

UNREADABLE = (ValueError, KeyError, TypeError, AttributeError)
"""What the bindings raise on an answer that is not the JSON they expect."""


class ServicesSource(Protocol):
    """What the heartbeat needs of `StorPoolConn`."""

    def services(self, *, retry: bool = True) -> Any: ...


@dataclass(frozen=True)
class Services:
    """One readable ServicesList answer."""

    cluster_status: str
    clients: ClientIndex


def read_services(conn: ServicesSource) -> Services | str:
    """One ServicesList (no retry: the heartbeat's next look is the retry); the answer, or the
    reason it cannot be used."""
    try:
        status = conn.services(retry=False)
    except StorPoolError as exc:
        return f"StorPool API: {exc.name}: {exc.descr}"
    except UNREADABLE as exc:
        return f"StorPool API: unreadable ServicesList answer ({type(exc).__name__}: {exc})"
    try:
        cluster = getattr(status, "clusterStatus", None)
        if not isinstance(cluster, str):
            raise Unreadable("no clusterStatus")
        return Services(cluster, ClientIndex.of(getattr(status, "clients", None)))
    except Unreadable as exc:
        return f"StorPool API: unreadable ServicesList answer: {exc}"
