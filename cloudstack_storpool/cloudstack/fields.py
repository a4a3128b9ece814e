"""Field tables for CloudStack response items: one generic builder, a handful of converters.

A record is a frozen dataclass whose every field says where in a response item its value is
(`api("zoneid")`, or a dotted path into a nested object) and how the raw JSON value becomes the
field's type. `Record.from_api` is the only code that reads response items, in the manner of
the StorPool bindings' `@JsonObject(name=type, ...)` tables: a renamed CloudStack field is one
edit in one table, and a new record is a declaration, not a parser.

Converters are lenient on purpose: CloudStack omits empty fields and versions differ in what
they send, so a missing or unreadable optional value is None (or the type's empty value), not a
failure. Only `ident` insists: an item without an id is a broken answer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, TypeVar, dataclass_transform

Convert = Callable[[Any], Any]
R = TypeVar("R", bound="Record")


def ident(value: Any) -> str:
    """A required id."""
    if value is None or value == "":
        raise ValueError("missing")
    return str(value)


def text(value: Any) -> str:
    """A string that is "" when absent."""
    return "" if value is None else str(value)


def opt_text(value: Any) -> str | None:
    """A string that is None when absent or empty."""
    return None if value is None or value == "" else str(value)


def raw_text(value: Any) -> str | None:
    """A string kept as sent, "" included (a setting's value may be the empty string)."""
    return None if value is None else str(value)


def opt_int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def count(value: Any) -> int:
    """An integer that is 0 when absent (sizes)."""
    return opt_int(value) or 0


def flag(value: Any) -> bool:
    """CloudStack sends booleans as JSON booleans, some versions as "true"/"false"."""
    if isinstance(value, str):
        return value.lower() == "true"
    return bool(value)


def timestamp(value: Any) -> datetime | None:
    """CloudStack's `2024-05-01T10:00:00+0000`."""
    if not value:
        return None
    try:
        return datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        return None


def str_map(value: Any) -> dict[str, str]:
    """A details object (`{"SP_OURID": "1", ...}`)."""
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    return {}


def tag_map(value: Any) -> dict[str, str]:
    """CloudStack's resource tags (`[{"key": k, "value": v, ...}]`, in listTags and inside
    listVirtualMachines items alike) as {k: v}."""
    items: Iterable[Any] = value if isinstance(value, list) else ()
    return {str(t["key"]): str(t.get("value", "")) for t in items if isinstance(t, Mapping) and "key" in t}


def api(
    key: str,
    convert: Convert = opt_text,
    *,
    default: Any = dataclasses.MISSING,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """One row of a record's table: the response key (dotted for a nested object) and its converter."""
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={"key": key, "convert": convert})


def _lookup(item: Mapping[str, Any], path: str) -> Any:
    value: Any = item
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


@dataclass_transform(frozen_default=True, field_specifiers=(api,))
class Record:
    """Base of the typed results: every subclass is a frozen dataclass built from its table."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dataclasses.dataclass(frozen=True)(cls)

    @classmethod
    def from_api(cls: type[R], item: Mapping[str, Any]) -> R:
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            key = f.metadata["key"]
            try:
                values[f.name] = f.metadata["convert"](_lookup(item, key))
            except ValueError:
                raise ValueError(f"CloudStack answered a {cls.__name__} without {key!r}") from None
        return cls(**values)
