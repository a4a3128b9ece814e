"""Python types -> JSON Schema (OpenAPI 3.1 dialect) for the service's OpenAPI document.

The schema of a parameter is derived from the same type, by the same type inspection
(`typedjson.py`), as the check the service applies to it, so what a client reads and what the
service validates cannot drift apart. Anything JSON cannot carry is refused when the operation
table is built (at import), not when a request arrives.
"""

from __future__ import annotations

import enum
import typing
from collections.abc import Sequence
from typing import Any

from cloudstack_storpool.poolconfig import Secret
from cloudstack_storpool.typedjson import (
    INT64_MAX,
    INT64_MIN,
    UUID_SUFFIX,
    FieldSpec,
    NoneType,
    Unresolved,
    UnsupportedType,
    dataclass_fields,
    is_dataclass_type,
    is_mapping_type,
    is_sequence_type,
    range_of,
    strip_annotated,
    to_json,
    union_args,
)
from cloudstack_storpool.uuids import PATTERN as UUID_PATTERN

_SCALARS: dict[Any, dict[str, Any]] = {
    bool: {"type": "boolean"},
    int: {"type": "integer", "format": "int64", "minimum": INT64_MIN, "maximum": INT64_MAX},
    float: {"type": "number"},
}


def _string(field_name: str) -> dict[str, Any]:
    if field_name.endswith(UUID_SUFFIX):
        return {"type": "string", "format": "uuid", "pattern": UUID_PATTERN}
    return {"type": "string"}


class SchemaBuilder:
    """Builds JSON Schemas (OpenAPI 3.1 dialect) and collects named dataclass components."""

    def __init__(self) -> None:
        self.components: dict[str, dict[str, Any]] = {}
        self._names: dict[type, str] = {}

    def component_name(self, cls: type) -> str:
        name = self._names.get(cls)
        if name is None:
            name = cls.__name__
            if name in self.components or name in self._names.values():
                name = f"{cls.__module__.rsplit('.', 1)[-1]}_{cls.__name__}"
            self._names[cls] = name
        return name

    def schema(self, tp: Any, field_name: str = "") -> dict[str, Any]:
        """The schema of a value of type `tp` (checked by `typedjson.parse` under the same name)."""
        bounds = range_of(tp)
        if bounds is not None and strip_annotated(tp) is int:
            return {"type": "integer", "format": "int64", "minimum": bounds.lo, "maximum": bounds.hi}
        tp = strip_annotated(tp)
        if isinstance(tp, Unresolved):
            raise UnsupportedType(f"{field_name}: cannot resolve annotation {tp.text!r}")
        if tp is Any or tp is object:
            return {}
        if tp is NoneType or tp is None:
            return {"type": "null"}
        args = union_args(tp)
        if args is not None:
            return self._union(args, field_name)
        if typing.get_origin(tp) is typing.Literal:
            return {"enum": list(typing.get_args(tp))}
        if tp is str:
            return _string(field_name)
        if tp in _SCALARS:
            return dict(_SCALARS[tp])
        if isinstance(tp, type) and issubclass(tp, Secret):
            return {"type": "string", "writeOnly": True}
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return {"enum": [m.value for m in tp]}
        if is_dataclass_type(tp):
            return self._component(tp)
        if is_sequence_type(tp):
            return self._array(tp, field_name)
        if is_mapping_type(tp):
            return self._map(tp, field_name)
        raise UnsupportedType(f"{field_name}: type {tp!r} cannot be carried in JSON")

    def _union(self, args: tuple[Any, ...], field_name: str) -> dict[str, Any]:
        non_null = [a for a in args if a is not NoneType]
        nullable = len(non_null) != len(args)
        if len(non_null) == 1:
            inner = self.schema(non_null[0], field_name)
            return _nullable(inner) if nullable else inner
        alts = [self.schema(a, field_name) for a in non_null]
        if nullable:
            alts.append({"type": "null"})
        return {"anyOf": alts}

    def _component(self, cls: type) -> dict[str, Any]:
        """A dataclass, once in `components` and by reference wherever it is used."""
        name = self.component_name(cls)
        if name not in self.components:
            self.components[name] = {}  # placeholder: recursive dataclasses terminate
            self.components[name] = self.object_schema(dataclass_fields(cls), describe(cls))
        return {"$ref": f"#/components/schemas/{name}"}

    def _array(self, tp: Any, field_name: str) -> dict[str, Any]:
        items = typing.get_args(tp)
        if typing.get_origin(tp) is tuple and items and (len(items) != 2 or items[1] is not Ellipsis):
            raise UnsupportedType(f"{field_name}: fixed-length tuples are not supported ({tp!r})")
        return {"type": "array", "items": self.schema(items[0], field_name) if items else {}}

    def _map(self, tp: Any, field_name: str) -> dict[str, Any]:
        kv = typing.get_args(tp)
        if kv and kv[0] is not str:
            raise UnsupportedType(f"{field_name}: mapping keys must be str ({tp!r})")
        return {"type": "object", "additionalProperties": self.schema(kv[1], field_name) if kv else True}

    def object_schema(self, fields: Sequence[FieldSpec], doc: str | None = None) -> dict[str, Any]:
        props: dict[str, Any] = {}
        required: list[str] = []
        for name, tp, req, default in fields:
            prop = dict(self.schema(tp, name))
            if not req and default is not None and _jsonable_default(default):
                value = to_json(default)
                prop = {**prop, "default": value} if "$ref" not in prop else {"allOf": [prop], "default": value}
            props[name] = prop
            if req:
                required.append(name)
        out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
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


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema or "anyOf" in schema or "enum" in schema or "type" not in schema:
        if not schema:
            return schema
        if "enum" in schema:
            return {**schema, "enum": [*schema["enum"], None]}
        return {"anyOf": [schema, {"type": "null"}]}
    t = schema["type"]
    return {**schema, "type": [t, "null"] if isinstance(t, str) else [*t, "null"]}


def _jsonable_default(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, enum.Enum)) and not isinstance(value, Secret)
