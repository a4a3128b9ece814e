"""JSON <-> typed Python values, on msgspec: the one request parser of the project.

Both HTTP APIs take JSON requests and hand typed values to Python functions: the driver service
(a driver function's parameters or request dataclass, service/spec.py) and the KVM host agent
(a command's request dataclass, agent/commands.py). Both parse with `parse_fields`, so a field
is refused for the same reasons, with the same message naming the same field, whichever API it
came through. msgspec does the checking (in C); this module only says which msgspec type checks
a Python type (`wire_type`), and the service's JSON Schema is msgspec's schema of that same type
(service/schema.py), so what is documented is what is checked.

Rules (documented in docs/service.md and docs/agent.md), all by type, none by name:
- `Uuid` (uuids.py) is a CloudStack uuid in its one canonical spelling, so a malformed id is
  refused naming the field before anything runs;
- `Optional[X]` / `X | None` accepts JSON null; a field with a default may be left out;
- dataclasses are objects without additional properties; Enums and Literals are enums;
- integers are 64-bit (and within the `Meta` bounds a type carries, bounds.py), numbers
  finite, strings free of NUL characters; a `Secret` is a string kept out of reprs.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import math
import re
import sys
import types
import typing
from collections.abc import Collection, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Annotated, Any, NamedTuple

import msgspec

from cloudstack_storpool.bounds import INT64_MAX
from cloudstack_storpool.errors import ValidationError
from cloudstack_storpool.poolconfig import Secret
from cloudstack_storpool.uuids import PATTERN as UUID_PATTERN

UUID_LENGTH = 36

NoneType = type(None)

# Integers are 64-bit on the wire: the caller is CloudStack (Java `long`), StorPool sizes are
# 64-bit, and a bigger number can only be a mistake that should be refused here, not a failure
# deep in a connection layer.
INT64_MIN = -(1 << 63)
NO_NUL = "^[^\x00]*$"
Int64 = Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX, extra_json_schema={"format": "int64"})]
Text = Annotated[str, msgspec.Meta(pattern=NO_NUL)]
_FLOAT_MAX = sys.float_info.max
Finite = Annotated[float, msgspec.Meta(ge=-_FLOAT_MAX, le=_FLOAT_MAX)]
"""A number that is not NaN or infinite (JSON as Python parses it may carry them)."""


class UnsupportedType(TypeError):
    """A signature uses a type JSON cannot carry (raised when an operation table is built)."""


class FieldSpec(NamedTuple):
    """One field of a request: what `parse_fields` checks."""

    name: str
    type: Any
    required: bool
    default: Any


# --------------------------------------------------------------------------- type inspection

@dataclasses.dataclass(frozen=True)
class Unresolved:
    """An annotation naming something the module never imports at run time."""

    text: str


def resolve_hints(obj: Any, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Type hints of a function or dataclass. `extra` names what its module imports only for
    type checkers (the caller's explicit table, e.g. `DriverContext`); an annotation that
    still cannot be resolved is `Unresolved`, tolerated only where no request reaches (`ctx`)."""
    module = sys.modules.get(getattr(obj, "__module__", ""), None)
    globalns: dict[str, Any] = {**(extra or {}), **(vars(module) if module is not None else {})}
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
                ann = eval(ann, globalns)  # noqa: S307 - annotations of our own modules, as typing.get_type_hints does
            except NameError:
                ann = Unresolved(ann)
        out[name] = ann
    return out


def strip_annotated(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def union_args(tp: Any) -> tuple[Any, ...] | None:
    """The alternatives of `X | Y` / `Optional[X]`, or None for any other type."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(tp)
    return None


def is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def is_scalar(tp: Any) -> bool:
    """Types a query string can carry."""
    tp = strip_annotated(tp)
    args = union_args(tp)
    if args is not None:
        return all(a is NoneType or is_scalar(a) for a in args)
    if typing.get_origin(tp) is typing.Literal:
        return True
    return tp in (str, int, float, bool) or (isinstance(tp, type) and issubclass(tp, enum.Enum))


@functools.cache
def dataclass_fields(cls: type) -> tuple[FieldSpec, ...]:
    """The init fields of a dataclass, as `parse_fields` takes them."""
    hints = resolve_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = f.default if f.default is not dataclasses.MISSING else None
        out.append(FieldSpec(f.name, hints.get(f.name, Any), required, default))
    return tuple(out)


# --------------------------------------------------------------------------- Python type -> msgspec type

_SEQUENCES = {list: list, tuple: tuple, set: frozenset, frozenset: frozenset, Sequence: list, AbstractSet: frozenset}


def wire_type(tp: Any) -> Any:
    """The msgspec type that checks a JSON value for `tp`: the same type, with plain `int` and
    `str` given the project's bounds (64-bit, no NUL) and each dataclass mirrored by a Struct
    that refuses unknown fields (msgspec ignores them on dataclasses)."""
    try:
        return _wire_type(tp)
    except TypeError as exc:  # unhashable metadata: worked out for this call only
        if "unhashable" not in str(exc):
            raise
        return _wire_type.__wrapped__(tp)


@functools.cache
def _wire_type(tp: Any) -> Any:
    if isinstance(tp, Unresolved):
        raise UnsupportedType(f"cannot resolve annotation {tp.text!r}")
    if typing.get_origin(tp) is typing.Annotated:
        inner, *meta = typing.get_args(tp)
        # A type that states its own bounds or pattern keeps them (two `Meta` of one kind clash).
        own = any(isinstance(m, msgspec.Meta) for m in meta)
        return Annotated[(strip_annotated(inner) if own else _wire_type(inner)), *meta]
    if tp is int:
        return Int64
    if tp is str:
        return Text
    if tp is float:
        return Finite
    if tp in (Any, object, NoneType, None, bool) or typing.get_origin(tp) is typing.Literal:
        return tp
    if isinstance(tp, type) and issubclass(tp, (Secret, enum.Enum)):
        return tp
    if is_dataclass_type(tp):
        return mirror(tp)
    args = union_args(tp)
    if args is not None:
        return functools.reduce(lambda a, b: a | b, [_wire_type(a) for a in args])
    origin = typing.get_origin(tp) or tp
    items = typing.get_args(tp)
    if origin in _SEQUENCES:
        if origin is tuple and items and (len(items) != 2 or items[1] is not Ellipsis):
            raise UnsupportedType(f"fixed-length tuples are not supported ({tp!r})")
        return _SEQUENCES[origin][_wire_type(items[0]) if items else Any]  # type: ignore[index]
    if origin in (dict, Mapping):
        if items and items[0] is not str:
            raise UnsupportedType(f"mapping keys must be str ({tp!r})")
        return dict[str, _wire_type(items[1]) if items else Any]  # type: ignore[misc]
    raise UnsupportedType(f"type {tp!r} cannot be carried in JSON")


_MIRRORED: dict[type, type] = {}
"""Struct mirror -> the dataclass it stands for."""
_MIRROR_NAMES: dict[str, type] = {}


@functools.cache
def mirror(cls: type) -> type[msgspec.Struct]:
    """A Struct with `cls`'s fields (wire types, same defaults) that refuses unknown fields; its
    name is the component name in the OpenAPI document (module-qualified on a clash)."""
    name = cls.__name__
    if _MIRROR_NAMES.setdefault(name, cls) is not cls:
        name = f"{cls.__module__.rsplit('.', 1)[-1]}_{cls.__name__}"
        _MIRROR_NAMES[name] = cls
    struct = msgspec.defstruct(name, [_struct_field(f) for f in dataclass_fields(cls)], kw_only=True,
                               forbid_unknown_fields=True, module=cls.__module__)
    doc = inspect.getdoc(cls) or ""
    struct.__doc__ = "" if doc.startswith(f"{cls.__name__}(") else doc
    _MIRRORED[struct] = cls
    return struct


def _struct_field(f: FieldSpec) -> tuple[Any, ...]:
    tp = wire_type(f.type)
    if f.required:
        return (f.name, tp)
    # The callee's own default applies to a field left out; the schema shows it when it is JSON.
    default = f.default if _jsonable(f.default) else msgspec.UNSET
    return (f.name, tp | msgspec.UnsetType if default is msgspec.UNSET else tp, default)


def _jsonable(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, enum.Enum)) and not isinstance(value, Secret)


# --------------------------------------------------------------------------- JSON -> Python

def _dec_hook(tp: type, value: Any) -> Any:
    if tp is Secret:
        if not isinstance(value, str) or "\x00" in value:
            raise ValueError("must be a string without NUL characters")
        return Secret(value)
    raise NotImplementedError


def _schema_hook(tp: type) -> dict[str, Any]:
    if tp is Secret:
        return {"type": "string", "writeOnly": True}
    raise NotImplementedError


def from_wire(value: Any) -> Any:
    """msgspec's value back in the caller's types: Struct mirrors become their dataclasses."""
    if isinstance(value, msgspec.Struct):
        cls = _MIRRORED[type(value)]
        return cls(**{f: from_wire(v) for f in value.__struct_fields__
                      if (v := getattr(value, f)) is not msgspec.UNSET})
    if isinstance(value, list):
        return [from_wire(v) for v in value]
    if isinstance(value, tuple):
        return tuple(from_wire(v) for v in value)
    if isinstance(value, frozenset):
        return frozenset(from_wire(v) for v in value)
    if isinstance(value, dict):
        return {k: from_wire(v) for k, v in value.items()}
    return value


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_NAMED = re.compile(r"^Object (?P<what>missing required|contains unknown) field `(?P<name>[^`]*)`$")


def _refusal(exc: msgspec.ValidationError, data: Any, prefix: str, what: str,
             allowed: Collection[str] | None = None) -> ValidationError:
    """msgspec's error as the project's: the field's dotted name and a message a caller reads."""
    m = _AT.match(str(exc))
    assert m is not None
    msg, path = m["msg"], (m["path"] or "").lstrip(".")
    named = _NAMED.match(msg)
    if named:
        path = f"{path}.{named['name']}" if path else named["name"]
        if named["what"] == "missing required":
            msg = "is required"
        else:
            shown = f" (allowed: {', '.join(sorted(allowed)) or 'none'})" if allowed is not None and "." not in path \
                and "[" not in path else ""
            msg = f"unknown field{shown}"
    elif msg.startswith("Expected `str` matching regex") or msg.startswith("Expected `str` of length"):
        value = _value_at(data, path)
        shown = repr(value[:60]) if isinstance(value, str) else type(value).__name__
        uuid = UUID_PATTERN in msg or msg.endswith(f" {UUID_LENGTH}")
        msg = (f"{shown} is not a CloudStack uuid (lower-case 8-4-4-4-12 hex digits)" if uuid
               else "must not contain NUL characters" if NO_NUL in msg else f"{shown}: {msg[len('Expected `str` '):]}")
    else:
        bound = re.match(r"^Expected `\w+` (?P<op>[<>]=?) (?P<n>-?\d+(?:\.\d+)?)$", msg)
        typed = re.match(r"^Expected `(?P<want>\w+)`, got `(?P<got>\w+)`$", msg)
        if bound:
            msg = f"must be {bound['op']} {bound['n']}, got {_value_at(data, path)!r}"
        elif typed and typed["want"] in _KINDS:
            msg = f"must be {_KINDS[typed['want']]}, got {typed['got']}"
    if "1.7976931348623157e+308" in msg or msg == "Number out of range":
        msg = "must be a finite number in range"
    field = ".".join(p for p in (prefix, path) if p) or what
    return ValidationError(field.replace(".[", "["), msg)


_KINDS = {"int": "an integer", "float": "a finite number", "bool": "true or false", "str": "a string",
          "object": "a JSON object", "array": "a JSON array"}
"""msgspec's type names as a caller reads them, in "Expected `int`, got `str`"."""


def _value_at(data: Any, path: str) -> Any:
    """The value at a msgspec path (`a.b[2]`) in the input, for the message; None if not found."""
    for key, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path):
        try:
            data = data[key] if key else data[int(index)]
        except (KeyError, IndexError, TypeError, ValueError):
            return None
    return data


class _FieldSet:
    """The fields of one request, compiled once into a Struct that msgspec checks."""

    def __init__(self, fields: tuple[FieldSpec, ...], also_allowed: Collection[str]) -> None:
        self.names = {f.name for f in fields} | set(also_allowed)
        extra = [(n, Any, msgspec.UNSET) for n in also_allowed if n not in {f.name for f in fields}]
        self.struct = msgspec.defstruct("Request", [_struct_field(f) for f in fields] + extra, kw_only=True,
                                        forbid_unknown_fields=True)
        self.keep = tuple(f.name for f in fields)

    def parse(self, data: Any, prefix: str, what: str, strict: bool = True) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise ValidationError(prefix or what, "must be a JSON object")
        try:
            value = msgspec.convert(data, self.struct, strict=strict, dec_hook=_dec_hook)
        except msgspec.ValidationError as exc:
            raise _refusal(exc, data, prefix, what, self.names) from None
        return {name: from_wire(v) for name in self.keep if (v := getattr(value, name)) is not msgspec.UNSET}


_FIELD_SETS: dict[Any, _FieldSet] = {}


def _field_set(fields: tuple[FieldSpec, ...], also_allowed: Collection[str]) -> _FieldSet:
    key = (fields, tuple(sorted(also_allowed)))
    try:
        found = _FIELD_SETS.get(key)
    except TypeError:  # unhashable metadata
        return _FieldSet(fields, also_allowed)
    if found is None:
        found = _FIELD_SETS[key] = _FieldSet(fields, also_allowed)
    return found


def parse_fields(fields: Iterable[FieldSpec], data: Any, *, prefix: str = "", what: str = "body",
                 also_allowed: Collection[str] = ()) -> dict[str, Any]:
    """Typed values of the `fields` present in the JSON object `data`.

    Refused, with a ValidationError naming the field: `data` not an object (named `prefix`, or
    `what` at the top level), a key that is neither a field nor in `also_allowed`, a required
    field left out, a value of the wrong type. Fields left out are left out of the result, so
    the callee's own defaults apply.
    """
    return _field_set(tuple(fields), also_allowed).parse(data, prefix, what)


def parse_object(cls: type, value: Any, field_name: str = "", *, what: str = "body") -> Any:
    """A dataclass instance from a JSON object (see `parse_fields`)."""
    return cls(**parse_fields(dataclass_fields(cls), value, prefix=field_name, what=what))


def parse(tp: Any, value: Any, field_name: str) -> Any:
    """A JSON value checked against `tp` and converted to it; ValidationError names the field."""
    try:
        return from_wire(msgspec.convert(value, wire_type(tp), dec_hook=_dec_hook))
    except msgspec.ValidationError as exc:
        raise _refusal(exc, value, field_name, field_name) from None


def parse_query(tp: Any, raw: str, field_name: str) -> Any:
    """A query-string or path value: scalars only, converted from text (`true`, `3`, `0.5`)
    before the same checks as a JSON value."""
    if "\x00" in raw:
        raise ValidationError(field_name, "must not contain NUL characters")
    alternatives = union_args(strip_annotated(tp)) or (strip_annotated(tp),)
    if bool in alternatives and raw not in ("true", "false") and set(alternatives) <= {bool, NoneType}:
        # (msgspec would also take 1/0 and any case; a query says true or false.)
        raise ValidationError(field_name, "must be true or false")
    try:
        return msgspec.convert(raw, wire_type(tp), strict=False, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        raise _refusal(exc, raw, field_name, field_name) from None


def schema_components(types_: Sequence[Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """msgspec's JSON Schemas of the wire types of `types_`, with references into
    `#/components/schemas/` (the NUL rule every string carries is not repeated in them)."""
    schemas, components = msgspec.json.schema_components(
        [wire_type(t) for t in types_], schema_hook=_schema_hook, ref_template="#/components/schemas/{name}")
    return [_tidy(s) for s in schemas], {k: _tidy(v) for k, v in components.items()}


def _tidy(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _tidy(v) for k, v in schema.items()
                if k != "title" and not (k == "pattern" and v == NO_NUL)
                and not (k in ("minimum", "maximum") and v in (-_FLOAT_MAX, _FLOAT_MAX))}
    if isinstance(schema, list):
        return [_tidy(v) for v in schema]
    return schema


# --------------------------------------------------------------------------- Python -> JSON

@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


_PLAIN = frozenset({str, int, bool, NoneType})


def _member(value: Any) -> Any:
    """A field or mapping value: the common plain ones as they are, without the checks."""
    return value if type(value) in _PLAIN else to_json(value)


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
        return {name: _member(getattr(value, name)) for name in _field_names(type(value))}
    if isinstance(value, Mapping):
        return {str(k): _member(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        items = [to_json(v) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    raise TypeError(f"cannot convert {type(value).__name__} to JSON")


__all__ = ["FieldSpec", "Finite", "Int64", "Text", "UnsupportedType", "dataclass_fields", "parse", "parse_fields",
           "parse_object", "parse_query", "resolve_hints", "schema_components", "to_json", "wire_type"]

