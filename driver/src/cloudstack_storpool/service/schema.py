"""Python types -> JSON Schema (OpenAPI 3.1 dialect) for the service's OpenAPI document.

The schema of a parameter is msgspec's schema of the very msgspec type that checks it
(`typedjson.wire_type`), so what a client reads and what the service validates cannot drift
apart. Anything JSON cannot carry is refused when the operation table is built (at import), not
when a request arrives.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any

import msgspec

from cloudstack_storpool.poolconfig import Secret
from cloudstack_storpool.typedjson import FieldSpec, UnsupportedType, schema_components


class SchemaBuilder:
    """Builds JSON Schemas and collects the named components (one per dataclass) they refer to."""

    def __init__(self) -> None:
        self.components: dict[str, dict[str, Any]] = {}

    def schema(self, tp: Any, field_name: str = "") -> dict[str, Any]:
        """The schema of a value of type `tp`."""
        try:
            (out,), components = schema_components([tp])
        except (TypeError, UnsupportedType) as exc:
            raise UnsupportedType(f"{field_name}: {exc}") from None
        self.components.update(components)
        return dict(out)

    def object_schema(self, fields: Sequence[FieldSpec], doc: str | None = None) -> dict[str, Any]:
        """The schema of a request body made of `fields` (no additional properties)."""
        props = {f.name: self.schema(f.type, f.name) for f in fields}
        for f in fields:
            if not f.required and _jsonable(f.default):
                prop = props[f.name]
                default = msgspec.to_builtins(f.default)
                props[f.name] = {**prop, "default": default} if "$ref" not in prop else {"allOf": [prop], "default": default}
        out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
        required = [f.name for f in fields if f.required]
        if required:
            out["required"] = required
        if doc:
            out["description"] = doc
        return out


def describe(obj: Any) -> str:
    """The first paragraph of a docstring, on one line; dataclasses' generated docs are skipped."""
    doc = getattr(obj, "__doc__", None) or ""
    if isinstance(obj, type) and doc.startswith(f"{obj.__name__}("):
        return ""
    return " ".join(doc.strip().split("\n\n", 1)[0].split())


def _jsonable(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, Enum)) and not isinstance(value, Secret)
