"""StorPool's JSON answers read into the project's records (`sprecords`).

Why not the bindings' typed objects: building one of them validates every field of the
object, the dozen the project never reads included, through several layers of generic
handlers. At 10,000 cached templates among 50,000 snapshots that was 2.2 s of a GC run for
0.12 s of JSON parsing. The bindings still send every request (`returnRawAPIData=True` hands
back the answer's `data` as parsed JSON); this module reads only the fields the records
carry, checks each one's type, and builds the record directly.

It also reads stricter than the bindings: they keep a partial object when a field is missing
or of another type (a missing `globalId` became the string "None", a missing `requests` an
empty list, i.e. "no I/O"). Here such an answer raises `SpMalformed` naming the field
(`data[12].globalId`), so no caller mistakes a broken answer for an object or for silence.

Wire quirks read here, once: an IOPS/bandwidth limit is an int or `"-"` (0 here: no limit), a
parent or template is `""` or absent when there is none, tags may be absent or null.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from cloudstack_storpool import names
from cloudstack_storpool.errors import SpMalformed
from cloudstack_storpool.sprecords import SpActiveRequest, SpAttachment, SpSnapshot, SpTemplate, SpVolume

R = TypeVar("R")


class _Bad(Exception):
    """A field of one object that cannot be read; the caller adds where the object was."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(key, message)
        self.key, self.message = key, message


def _got(value: Any) -> str:
    return "null" if value is None else type(value).__name__


_MISSING: Any = object()


def _get(obj: dict[str, Any], key: str, kinds: tuple[type, ...], what: str, default: Any = _MISSING) -> Any:
    """`obj[key]` when its JSON type is one of `kinds`; `default` when it is null or absent and
    the field may be left out (a name that is `""` when there is none, a count older servers
    or other listings do not send)."""
    value = obj.get(key)
    if type(value) in kinds:
        return value
    if value is None and default is not _MISSING:
        return default
    raise _Bad(key, f"must be {what}, got {_got(value)}")


_STR, _INT, _NUMBER, _BOOL = (str,), (int,), (int, float), (bool,)


def _size(obj: dict[str, Any]) -> int:
    value = _get(obj, "size", _INT, "an integer")
    if value < 0:
        raise _Bad("size", f"must not be negative, got {value}")
    return int(value)


def _limit(obj: dict[str, Any], key: str) -> int:
    """StorPool's IOPS/bandwidth limit: an int, or `"-"` (or absent) for none; 0 means none here."""
    value = obj.get(key)
    if type(value) is int:
        return value if value > 0 else 0
    if value == "-" or value is None:
        return 0
    raise _Bad(key, f'must be an integer or "-", got {_got(value)}')


def _tags(obj: dict[str, Any]) -> dict[str, str]:
    value = obj.get("tags")
    if value is None:
        return {}
    if type(value) is not dict:
        raise _Bad("tags", f"must be an object, got {_got(value)}")
    for k, v in value.items():
        if type(v) is not str:
            raise _Bad(f"tags.{k}", f"must be a string, got {_got(v)}")
    return value  # the answer's own dict: nothing else holds it


def _id(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if type(value) is str and value:
        return value
    raise _Bad(key, f"must be a non-empty string, got {_got(value) if value != '' else 'an empty one'}")


def _global_id(obj: dict[str, Any]) -> str:
    return _id(obj, "globalId")


def _object(obj: Any) -> dict[str, Any]:
    if type(obj) is not dict:
        raise _Bad("", f"must be an object, got {_got(obj)}")
    return obj


def _common(obj: dict[str, Any]) -> dict[str, Any]:
    """The fields volumes and snapshots share."""
    return {
        "name": _get(obj, "name", _STR, "a string"), "global_id": _global_id(obj), "size": _size(obj),
        "template": _get(obj, "templateName", _STR, "a string", ""),
        "parent": _get(obj, "parentName", _STR, "a string", ""),
        "iops": _limit(obj, "iops"), "bw": _limit(obj, "bw"), "tags": _tags(obj),
        "created": float(_get(obj, "creationTimestamp", _NUMBER, "a number", 0)),
        "space_used": _get(obj, "spaceUsed", _INT, "an integer", 0),
        "stored": _get(obj, "storedSize", _INT, "an integer", 0),
    }


def _volume(raw: Any) -> SpVolume:
    return SpVolume(**_common(_object(raw)))


def _snapshot(raw: Any) -> SpSnapshot:
    obj = _object(raw)
    return SpSnapshot(
        **_common(obj), on_volume=_get(obj, "onVolume", _STR, "a string", ""),
        deleted=_get(obj, "deleted", _BOOL, "true or false", False),
        transient=_get(obj, "transient", _BOOL, "true or false", False),
        delete_at=float(_get(obj, "targetDeleteDate", _NUMBER, "a number", 0)),
        recovering=_get(obj, "recoveringFromRemote", _BOOL, "true or false", False),
    )


def _template(raw: Any) -> SpTemplate:
    obj = _object(raw)
    replication = obj.get("replication")
    if not (type(replication) is int or replication in ("-", None)):
        raise _Bad("replication", f'must be an integer or "-", got {_got(replication)}')
    return SpTemplate(name=_get(obj, "name", _STR, "a string"), iops=_limit(obj, "iops"), bw=_limit(obj, "bw"),
                      replication=replication if type(replication) is int else 0)


def _attachment(raw: Any) -> SpAttachment:
    """An attachment without a global id (old servers) is named by its volume; `~name` is not
    a valid ref then, so callers match by `global_id` or `name`."""
    obj = _object(raw)
    client = obj.get("client")
    if not names.is_client_id(client):
        raise _Bad("client", f"must be a StorPool client id 1..4095, got {client!r}")
    rights = obj.get("rights")
    if rights != "rw" and rights != "ro":
        raise _Bad("rights", f'must be "rw" or "ro", got {rights!r}')
    snapshot = _get(obj, "snapshot", _BOOL, "true or false")
    return SpAttachment(name=_get(obj, "volume", _STR, "a string"), global_id=_get(obj, "globalId", _STR, "a string", ""),
                        kind="snapshot" if snapshot else "volume", client=client, rights=rights)


def _active_request(raw: Any) -> SpActiveRequest:
    return SpActiveRequest(volume=_get(_object(raw), "volume", _STR, "a string"))


def _list(build: Callable[[Any], R], data: Any, query: str, where: str = "data") -> list[R]:
    """Every object of a list answer, or SpMalformed naming the first field that is not."""
    if type(data) is not list:
        raise SpMalformed(where, f"must be an array, got {_got(data)}", query=query)
    out: list[R] = []
    append = out.append
    try:
        for obj in data:
            append(build(obj))
    except _Bad as exc:
        field = f"{where}[{len(out)}]" + (f".{exc.key}" if exc.key else "")
        raise SpMalformed(field, exc.message, query=query) from None
    return out


def volumes(data: Any, query: str) -> list[SpVolume]:
    """VolumesList, VolumesSpace, Volume/<name>."""
    return _list(_volume, data, query)


def snapshots(data: Any, query: str) -> list[SpSnapshot]:
    """SnapshotsList, Snapshot/<name>."""
    return _list(_snapshot, data, query)


def attachments(data: Any, query: str) -> list[SpAttachment]:
    return _list(_attachment, data, query)


def _one(build: Callable[[Any], R], data: Any, query: str) -> R:
    """One object from an answer's `data`; SpMalformed names the bad field."""
    try:
        return build(data)
    except _Bad as exc:
        raise SpMalformed(f"data.{exc.key}" if exc.key else "data", exc.message, query=query) from None


def template(data: Any, query: str) -> SpTemplate:
    """VolumeTemplateDescribe."""
    return _one(_template, data, query)


def active_requests(data: Any, query: str) -> list[SpActiveRequest]:
    """ClientActiveRequests. A missing or null `requests` is malformed, not "no I/O": the
    heartbeat must not take an answer it cannot read for an idle client."""
    if type(data) is not dict:
        raise SpMalformed("data", f"must be an object, got {_got(data)}", query=query)
    return _list(_active_request, data.get("requests"), query, "data.requests")


def created_id(data: Any, key: str, query: str) -> str:
    """The global id a create answered with (`globalId` of VolumeCreate, `snapshotGlobalId` of
    VolumeSnapshot), read from the raw answer: the bindings' typed answer costs more than the
    rest of the answer's handling, and only this field is used."""
    return _one(lambda obj: _id(_object(obj), key), data, query)
