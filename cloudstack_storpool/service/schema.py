"""Python types <-> JSON: the one place that turns a driver signature into a JSON Schema, a JSON
request into typed arguments, and a typed result back into JSON.

The service and its OpenAPI document are both derived from the driver's own type hints through
this module, so the schema a client reads and the validation the service applies are the same
function of the same types and cannot drift apart. Only the shapes a JSON API can carry are
supported; anything else is refused when the operation table is built (at import), not when a
request arrives.

Conventions (documented in docs/service.md):
- a `str` parameter or field whose name ends in `_uuid` is a CloudStack uuid (`format: uuid`),
  checked here so that a malformed id is a 400 naming the field before the driver runs;
- `Optional[X]` / `X | None` accepts JSON null; a parameter with a default is optional;
- dataclasses are objects without additional properties; Enums and Literals are enums.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import functools
import importlib
import inspect
import math
import sys
import types
import typing
import uuid as uuidlib
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from cloudstack_storpool.bounds import Range
from cloudstack_storpool.errors import ValidationError
from cloudstack_storpool.poolconfig import Secret

NoneType = type(None)

UUID_SUFFIX = "_uuid"
# Integers are 64-bit on the wire: the caller is CloudStack (Java `long`), StorPool sizes are
# 64-bit, and a bigger number can only be a mistake that should be a 400 here, not a failure
# deep in a connection layer.
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1


class UnsupportedType(TypeError):
    """A driver signature uses a type the JSON API cannot carry (raised at table build time)."""


# --------------------------------------------------------------------------- type inspection

def resolve_hints(obj: Any, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Type hints of a function or dataclass, evaluated even when the module imported some names
    only under TYPE_CHECKING (`extra` supplies them, e.g. DriverContext)."""
    module = sys.modules.get(getattr(obj, "__module__", ""), None)
    globalns: dict[str, Any] = dict(vars(module)) if module is not None else {}
    if module is not None:
        for key, value in type_checking_imports(module).items():
            globalns.setdefault(key, value)
    for key, value in (extra or {}).items():
        globalns.setdefault(key, value)
    raw: dict[str, Any] = {}
    if isinstance(obj, type):
        for klass in reversed(obj.__mro__):
            raw.update(getattr(klass, "__annotations__", {}))
    else:
        raw = dict(getattr(obj, "__annotations__", {}))
    out: dict[str, Any] = {}
    for name, ann in raw.items():
        if isinstance(ann, str):
            try:
                ann = eval(ann, globalns)  # noqa: S307 - annotations of our own modules
            except NameError:
                # Unresolvable names are only tolerated where the service never looks (ctx).
                ann = _Unresolved(ann)
        out[name] = ann
    return out


@functools.cache
def type_checking_imports(module: types.ModuleType) -> dict[str, Any]:
    """Names a module imports only under `if TYPE_CHECKING:` (to avoid import cycles), imported
    now: the modules are all loaded by the time the operation table is built."""
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return {}
    out: dict[str, Any] = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.If):
            continue
        test = node.test
        name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else ""
        if name != "TYPE_CHECKING":
            continue
        for stmt in node.body:
            if isinstance(stmt, ast.ImportFrom) and stmt.module and stmt.level == 0:
                try:
                    mod = importlib.import_module(stmt.module)
                except ImportError:
                    continue
                for alias in stmt.names:
                    if hasattr(mod, alias.name):
                        out[alias.asname or alias.name] = getattr(mod, alias.name)
    return out


@dataclasses.dataclass(frozen=True)
class _Unresolved:
    text: str


def _strip_annotated(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _union_args(tp: Any) -> tuple[Any, ...] | None:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(tp)
    return None


def is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def is_scalar(tp: Any) -> bool:
    """Types a query string can carry."""
    tp = _strip_annotated(tp)
    args = _union_args(tp)
    if args is not None:
        return all(a is NoneType or is_scalar(a) for a in args)
    if typing.get_origin(tp) is typing.Literal:
        return True
    return tp in (str, int, float, bool) or (isinstance(tp, type) and issubclass(tp, enum.Enum))


def dataclass_fields(cls: type) -> list[tuple[str, Any, bool, Any]]:
    """(name, type, required, default) for each init field of a dataclass."""
    hints = resolve_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = f.default if f.default is not dataclasses.MISSING else None
        out.append((f.name, hints.get(f.name, Any), required, default))
    return out


# --------------------------------------------------------------------------- JSON Schema

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
        bounds = _range_of(tp)
        if bounds is not None and _strip_annotated(tp) is int:
            return {"type": "integer", "format": "int64", "minimum": bounds.lo, "maximum": bounds.hi}
        tp = _strip_annotated(tp)
        if isinstance(tp, _Unresolved):
            raise UnsupportedType(f"{field_name}: cannot resolve annotation {tp.text!r}")
        if tp is Any or tp is object:
            return {}
        if tp is NoneType or tp is None:
            return {"type": "null"}
        args = _union_args(tp)
        if args is not None:
            non_null = [a for a in args if a is not NoneType]
            nullable = len(non_null) != len(args)
            if len(non_null) == 1:
                inner = self.schema(non_null[0], field_name)
                return _nullable(inner) if nullable else inner
            alts = [self.schema(a, field_name) for a in non_null]
            if nullable:
                alts.append({"type": "null"})
            return {"anyOf": alts}
        origin = typing.get_origin(tp)
        if origin is typing.Literal:
            values = list(typing.get_args(tp))
            return {"enum": values}
        if tp is bool:
            return {"type": "boolean"}
        if tp is int:
            return {"type": "integer", "format": "int64", "minimum": INT64_MIN, "maximum": INT64_MAX}
        if tp is float:
            return {"type": "number"}
        if isinstance(tp, type) and issubclass(tp, Secret):
            return {"type": "string", "writeOnly": True}
        if tp is str:
            if field_name.endswith(UUID_SUFFIX):
                return {"type": "string", "format": "uuid"}
            return {"type": "string"}
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return {"enum": [m.value for m in tp]}
        if is_dataclass_type(tp):
            name = self.component_name(tp)
            if name not in self.components:
                self.components[name] = {}  # placeholder: recursive dataclasses terminate
                self.components[name] = self.object_schema(dataclass_fields(tp), describe(tp))
            return {"$ref": f"#/components/schemas/{name}"}
        if origin in (list, tuple, set, frozenset, Sequence, AbstractSet) or tp in (list, tuple, set, frozenset):
            items = typing.get_args(tp)
            if origin is tuple and items and (len(items) != 2 or items[1] is not Ellipsis):
                raise UnsupportedType(f"{field_name}: fixed-length tuples are not supported ({tp!r})")
            item_schema = self.schema(items[0], field_name) if items else {}
            return {"type": "array", "items": item_schema}
        if origin in (dict, Mapping) or tp in (dict, Mapping):
            kv = typing.get_args(tp)
            if kv and kv[0] is not str:
                raise UnsupportedType(f"{field_name}: mapping keys must be str ({tp!r})")
            return {"type": "object", "additionalProperties": self.schema(kv[1], field_name) if kv else True}
        raise UnsupportedType(f"{field_name}: type {tp!r} cannot be carried in JSON")

    def object_schema(self, fields: Sequence[tuple[str, Any, bool, Any]], doc: str | None = None) -> dict[str, Any]:
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


# --------------------------------------------------------------------------- JSON -> Python

def _range_of(tp: Any) -> Range | None:
    """The `Range` an `Annotated[int, Range(...)]` carries (bounds.py), if any."""
    if typing.get_origin(tp) is typing.Annotated:
        return next((m for m in typing.get_args(tp)[1:] if isinstance(m, Range)), None)
    return None


def parse(tp: Any, value: Any, field_name: str) -> Any:
    """A JSON value checked against `tp` and converted to it; ValidationError names the field."""
    out = _parse_unbounded(tp, value, field_name)
    bounds = _range_of(tp)
    if bounds is not None and isinstance(out, int):
        bounds.check(out, field_name)
    return out


def _parse_unbounded(tp: Any, value: Any, field_name: str) -> Any:
    tp = _strip_annotated(tp)
    if tp is Any or tp is object:
        return value
    if tp is NoneType or tp is None:
        if value is not None:
            raise ValidationError(field_name, "must be null")
        return None
    args = _union_args(tp)
    if args is not None:
        if value is None:
            if NoneType in args:
                return None
            raise ValidationError(field_name, "must not be null")
        errors: list[ValidationError] = []
        for alt in args:
            if alt is NoneType:
                continue
            try:
                return parse(alt, value, field_name)
            except ValidationError as exc:
                errors.append(exc)
        # Report the deepest message of the first alternative: the common single-type case.
        raise errors[0]
    if value is None:
        raise ValidationError(field_name, "must not be null")
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed or isinstance(value, bool) != any(isinstance(a, bool) for a in allowed if a == value):
            raise ValidationError(field_name, f"must be one of {', '.join(map(repr, allowed))}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ValidationError(field_name, "must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError(field_name, "must be an integer")
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValidationError(field_name, "must fit in a signed 64-bit integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValidationError(field_name, "must be a finite number")
        return float(value)
    if tp is str or (isinstance(tp, type) and issubclass(tp, Secret)):
        if not isinstance(value, str):
            raise ValidationError(field_name, "must be a string")
        if "\x00" in value:
            raise ValidationError(field_name, "must not contain NUL characters")
        if tp is str and field_name.rsplit(".", 1)[-1].split("[", 1)[0].endswith(UUID_SUFFIX):
            return check_uuid(value, field_name)
        return Secret(value) if tp is not str else value
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        for member in tp:
            if member.value == value and type(member.value) is type(value):
                return member
        raise ValidationError(field_name, f"must be one of {', '.join(repr(m.value) for m in tp)}")
    if is_dataclass_type(tp):
        return parse_object(tp, value, field_name)
    if origin in (list, tuple, set, frozenset, Sequence, AbstractSet) or tp in (list, tuple, set, frozenset):
        if not isinstance(value, list):
            raise ValidationError(field_name, "must be an array")
        items = typing.get_args(tp)
        item_tp = items[0] if items else Any
        parsed = [parse(item_tp, v, f"{field_name}[{i}]") for i, v in enumerate(value)]
        kind = origin or tp
        if kind in (tuple,):
            return tuple(parsed)
        if kind in (set, frozenset, AbstractSet):
            try:
                return frozenset(parsed)
            except TypeError:
                raise ValidationError(field_name, "items must be scalar") from None
        return parsed
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, dict):
            raise ValidationError(field_name, "must be an object")
        kv = typing.get_args(tp)
        val_tp = kv[1] if kv else Any
        return {k: parse(val_tp, v, f"{field_name}.{k}") for k, v in value.items()}
    raise UnsupportedType(f"{field_name}: type {tp!r} cannot be carried in JSON")


def parse_object(cls: type, value: Any, field_name: str) -> Any:
    if not isinstance(value, dict):
        raise ValidationError(field_name, "must be an object")
    fields = dataclass_fields(cls)
    known = {name for name, *_ in fields}
    for key in value:
        if key not in known:
            raise ValidationError(f"{field_name}.{key}" if field_name else key,
                                  f"unknown field (allowed: {', '.join(sorted(known))})")
    kwargs: dict[str, Any] = {}
    for name, tp, required, _default in fields:
        path = f"{field_name}.{name}" if field_name else name
        if name not in value:
            if required:
                raise ValidationError(path, "is required")
            continue
        kwargs[name] = parse(tp, value[name], path)
    return cls(**kwargs)


def check_uuid(value: str, field_name: str) -> str:
    try:
        canonical = str(uuidlib.UUID(value))
    except ValueError:
        raise ValidationError(field_name, f"{value[:60]!r} is not a CloudStack uuid") from None
    # UUID() also takes braces, "urn:" and misplaced or missing dashes; only one spelling
    # may name an object, since the driver derives StorPool names from it.
    if value.lower() != canonical:
        raise ValidationError(field_name, "must be a uuid in the 8-4-4-4-12 form")
    return canonical


def parse_query(tp: Any, raw: str, field_name: str) -> Any:
    """A query-string value: scalars only, converted from text before the usual checks."""
    args = _union_args(_strip_annotated(tp))
    candidates = [a for a in args if a is not NoneType] if args is not None else [tp]
    last: ValidationError | None = None
    for cand in candidates:
        try:
            return parse(cand, _from_text(_strip_annotated(cand), raw, field_name), field_name)
        except ValidationError as exc:
            last = exc
    assert last is not None
    raise last


def _from_text(tp: Any, raw: str, field_name: str) -> Any:
    if tp is bool:
        if raw in ("true", "false"):
            return raw == "true"
        raise ValidationError(field_name, "must be true or false")
    if tp is int or (isinstance(tp, type) and issubclass(tp, enum.Enum) and
                     all(isinstance(m.value, int) for m in tp)):
        try:
            return int(raw)
        except ValueError:
            raise ValidationError(field_name, "must be an integer") from None
    if tp is float:
        try:
            return float(raw)
        except ValueError:
            raise ValidationError(field_name, "must be a number") from None
    if typing.get_origin(tp) is typing.Literal:
        for v in typing.get_args(tp):
            if str(v).lower() == raw or str(v) == raw:
                return v
    return raw


# --------------------------------------------------------------------------- Python -> JSON

def to_json(value: Any) -> Any:
    """A result as JSON: dataclasses field by field, enums by value, secrets masked."""
    if isinstance(value, Secret):
        return "***"
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, enum.Enum):
        return to_json(value.value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        items = [to_json(v) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    raise TypeError(f"cannot convert {type(value).__name__} to JSON")


def callable_name(func: Callable[..., Any]) -> str:
    return f"{func.__module__}.{getattr(func, '__qualname__', repr(func))}"
