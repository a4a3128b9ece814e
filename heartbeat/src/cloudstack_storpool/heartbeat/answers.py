"""StorPool's answers as the heartbeat reads them: a failed call, or an answer it cannot read,
becomes a reason to report, never an exception.

The bindings parse ServicesList into typed objects but keep partial ones when a field is
missing or of another type (`clients: null` or a list becomes None, a client without an id
keeps `id=None`), and raise plain ValueError or KeyError on an HTML error page, truncated JSON
or a `data` that is not an object. A heartbeat that raised on those would crash `heartbeat
status` and leave the host loop's previous `ok` in its status file. Here every such answer is
"cannot tell", with what was wrong as the reason; "cannot tell" never fences and never reboots.

ClientActiveRequests is read the same way by the host loop's `idle`, the check's I/O samples and
`vm_activity` (`read_active_requests`): the connection layer refuses an answer without its
`requests` list (`SpMalformed`), which the bindings used to fill with an empty one, i.e. "no I/O".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from cloudstack_storpool.errors import SpTransient, StorPoolError
from cloudstack_storpool.heartbeat.policy import ClientIndex, Unreadable
from cloudstack_storpool.sprecords import SpActiveRequest

UNREADABLE = (ValueError, KeyError, TypeError, AttributeError)
"""What the bindings raise on an answer that is not the JSON they expect."""


# Non-transient answers of ClientActiveRequests that mean "this client is not running / not
# known", i.e. agree with a down or absent client in ServicesList. Any other error, and every
# transient one, leaves the sample unknown.
NOT_RUNNING_ERRORS = frozenset({"busy", "objectDoesNotExist"})


class ServicesSource(Protocol):
    """What the heartbeat needs of `StorPoolConn`."""

    def services(self, *, retry: bool = True) -> Any: ...


class RequestsSource(Protocol):
    def client_active_requests(self, client_id: int, *, retry: bool = True) -> list[SpActiveRequest]: ...


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


@dataclass(frozen=True)
class ActiveRequests:
    """One look at a client's I/O in flight: the volumes of its requests (one per request),
    `()` when StorPool says the client is not running, None when the answer tells nothing."""

    volumes: tuple[str, ...] | None
    reason: str = ""


def read_active_requests(conn: RequestsSource, client_id: int) -> ActiveRequests:
    """One ClientActiveRequests (no retry: the caller samples again). An answer the connection
    layer cannot read (no `requests` list, an HTML page, truncated JSON) is None, never "no I/O"."""
    try:
        requests = conn.client_active_requests(client_id, retry=False)
    except StorPoolError as exc:
        if exc.name in NOT_RUNNING_ERRORS and not isinstance(exc, SpTransient):
            # The API answered, definitively, that it cannot list this client's requests because
            # the client is not there / not running: the same fact ServicesList gave, seen from
            # a second query. There is no I/O it can show.
            return ActiveRequests((), f"{exc.name}: {exc.descr}")
        return ActiveRequests(None, f"{exc.name}: {exc.descr}")
    except UNREADABLE as exc:
        return ActiveRequests(None, f"unreadable ClientActiveRequests answer ({type(exc).__name__}: {exc})")
    return ActiveRequests(tuple(r.volume for r in requests))
