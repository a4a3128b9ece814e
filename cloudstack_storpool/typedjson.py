"""JSON <-> typed Python values: the one request parser of the project.

Both HTTP APIs take JSON requests and hand typed values to Python functions: the driver service
(a driver function's parameters or request dataclass, service/spec.py) and the KVM host agent
(a command's request dataclass, agent/commands.py). Both parse with `parse_fields`, so a field
is refused for the same reasons, with the same message naming the same field, whichever API it
came through. The service's JSON Schema (service/schema.py) is derived from the same type
inspection, so what is documented is what is checked.

Rules (documented in docs/service.md and docs/agent.md):
- a `str` parameter or field whose name ends in `_uuid` is a CloudStack uuid in its one
  canonical spelling (`uuids.py`), so a malformed id is refused naming the field before
  anything runs;
- `Optional[X]` / `X | None` accepts JSON null; a field with a default may be left out;
- dataclasses are objects without additional properties; Enums and Literals are enums;
- integers are 64-bit, numbers finite, strings free of NUL characters.
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
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, NamedTuple, TypeVar

from cloudstack_storpool.bounds import INT64_MAX, Range
from cloudstack_storpool.errors import ValidationError
from cloudstack_storpool.poolconfig import Secret
from cloudstack_storpool.uuids import check_uuid

NoneType = type(None)

UUID_SUFFIX = "_uuid"
# Integers are 64-bit on the wire: the caller is CloudStack (Java `long`), StorPool sizes are
# 64-bit, and a bigger number can only be a mistake that should be refused here, not a failure
# deep in a connection layer.
INT64_MIN = -(1 << 63)

_SEQUENCES = (list, tuple, set, frozenset, Sequence, AbstractSet)
_SETS = (set, frozenset, AbstractSet)


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
                # Unresolvable names are only tolerated where no request reaches (ctx).
                ann = Unresolved(ann)
        out[name] = ann
    return out


@functools.cache
def type_checking_imports(module: types.ModuleType) -> dict[str, Any]:
    """Names a module imports only under `if TYPE_CHECKING:` (to avoid import cycles), imported
    now: the modules are all loaded by the time a request type is inspected."""
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


def is_sequence_type(tp: Any) -> bool:
    return typing.get_origin(tp) in _SEQUENCES or tp in (list, tuple, set, frozenset)


def is_mapping_type(tp: Any) -> bool:
    return typing.get_origin(tp) in (dict, Mapping) or tp in (dict, Mapping)


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


# --------------------------------------------------------------------------- JSON -> Python

def parse_fields(fields: Iterable[FieldSpec], data: Any, *, prefix: str = "", what: str = "body",
                 also_allowed: Collection[str] = ()) -> dict[str, Any]:
    """Typed values of the `fields` present in the JSON object `data`.

    Refused, with a ValidationError naming the field: `data` not an object (named `prefix`, or
    `what` at the top level), a key that is neither a field nor in `also_allowed`, a required
    field left out, a value of the wrong type. Fields left out are left out of the result, so
    the callee's own defaults apply.
    """
    fields = tuple(fields)
    if not isinstance(data, dict):
        raise ValidationError(prefix or what, "must be a JSON object")
    _refuse_unknown(data, {f.name for f in fields} | set(also_allowed), prefix)
    out: dict[str, Any] = {}
    for f in fields:
        path = f"{prefix}.{f.name}" if prefix else f.name
        if f.name in data:
            out[f.name] = parse(f.type, data[f.name], path)
        elif f.required:
            raise ValidationError(path, "is required")
    return out


def _refuse_unknown(data: Mapping[str, Any], allowed: AbstractSet[str], prefix: str) -> None:
    for key in data:
        if key not in allowed:
            raise ValidationError(f"{prefix}.{key}" if prefix else str(key),
                                  f"unknown field (allowed: {', '.join(sorted(allowed)) or 'none'})")


def parse_object(cls: type, value: Any, field_name: str = "", *, what: str = "body") -> Any:
    """A dataclass instance from a JSON object (see `parse_fields`)."""
    return cls(**parse_fields(dataclass_fields(cls), value, prefix=field_name, what=what))


def range_of(tp: Any) -> Range | None:
    """The `Range` an `Annotated[int, Range(...)]` carries (bounds.py), if any."""
    if typing.get_origin(tp) is typing.Annotated:
        return next((m for m in typing.get_args(tp)[1:] if isinstance(m, Range)), None)
    return None


def parse(tp: Any, value: Any, field_name: str) -> Any:
    """A JSON value checked against `tp` (and the `Range` it may carry) and converted to it;
    ValidationError names the field."""
    return _per_type(_compile, tp)(value, field_name)


Checker = Callable[[Any, str], Any]
T = TypeVar("T")


def _per_type(work: Callable[[Any], T], tp: Any) -> T:
    """`work(tp)` from its cache (`work` is `functools.cache`d); a type expression that cannot
    be a cache key (unhashable metadata) is worked out for this call only."""
    try:
        return work(tp)
    except TypeError:
        return work.__wrapped__(tp)  # type: ignore[attr-defined]


@functools.cache
def _compile(tp: Any) -> Checker:
    """The check of one type, worked out once: the service parses every request, and looking
    the type over again (origins, arguments, metadata) cost more than checking the value."""
    inner = _compile_unbounded(tp)
    bounds = range_of(tp)
    if bounds is None:
        return inner

    def bounded(value: Any, field_name: str) -> Any:
        out = inner(value, field_name)
        if isinstance(out, int):
            bounds.check(out, field_name)
        return out

    return bounded


def _compile_unbounded(tp: Any) -> Checker:
    tp = strip_annotated(tp)
    if tp is Any or tp is object:
        return _as_is
    if tp is NoneType or tp is None:
        return _parse_null
    args = union_args(tp)
    if args is not None:
        return functools.partial(_parse_union, args)
    check = _compile_value(tp)

    def not_null(value: Any, field_name: str) -> Any:
        if value is None:
            raise ValidationError(field_name, "must not be null")
        return check(value, field_name)

    return not_null


def _compile_value(tp: Any) -> Checker:
    """The check of a value already known not to be null."""
    if typing.get_origin(tp) is typing.Literal:
        return functools.partial(_parse_literal, typing.get_args(tp))
    if tp in _SCALARS:
        return _SCALARS[tp]
    if isinstance(tp, type) and issubclass(tp, Secret):
        return _parse_secret
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return functools.partial(_parse_enum, tp)
    if is_dataclass_type(tp):
        return functools.partial(parse_object, tp)
    if is_sequence_type(tp):
        return functools.partial(_parse_sequence, tp)
    if is_mapping_type(tp):
        return functools.partial(_parse_mapping, tp)

    def unsupported(_value: Any, field_name: str) -> Any:
        raise UnsupportedType(f"{field_name}: type {tp!r} cannot be carried in JSON")

    return unsupported


def _as_is(value: Any, _field_name: str) -> Any:
    return value


def _parse_null(value: Any, field_name: str) -> None:
    if value is not None:
        raise ValidationError(field_name, "must be null")
    return None


def _parse_secret(value: Any, field_name: str) -> Secret:
    return Secret(_parse_text(value, field_name))


def _parse_union(args: tuple[Any, ...], value: Any, field_name: str) -> Any:
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
    # Report the message of the first alternative: the common single-type case.
    raise errors[0]


def _parse_literal(allowed: tuple[Any, ...], value: Any, field_name: str) -> Any:
    # True == 1 in Python: a boolean matches only a boolean literal, and a number only a number.
    if value not in allowed or isinstance(value, bool) != any(isinstance(a, bool) for a in allowed if a == value):
        raise ValidationError(field_name, f"must be one of {', '.join(map(repr, allowed))}")
    return value


def _parse_bool(value: Any, field_name: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(field_name, "must be true or false")
    return value


def _parse_int(value: Any, field_name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field_name, "must be an integer")
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValidationError(field_name, "must fit in a signed 64-bit integer")
    return value


def _parse_float(value: Any, field_name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(field_name, "must be a finite number")
    try:
        number = float(value)
    except OverflowError:  # an integer too big for a float
        raise ValidationError(field_name, "must be a finite number") from None
    # JSON as Python parses it may carry NaN and Infinity.
    if not math.isfinite(number):
        raise ValidationError(field_name, "must be a finite number")
    return number


def _parse_text(value: Any, field_name: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(field_name, "must be a string")
    if "\x00" in value:
        raise ValidationError(field_name, "must not contain NUL characters")
    return value


def _parse_str(value: Any, field_name: str) -> str:
    text = _parse_text(value, field_name)
    if _leaf_name(field_name).endswith(UUID_SUFFIX):
        return check_uuid(text, field_name)
    return text


def _leaf_name(field_name: str) -> str:
    """`where.items[2]` -> `items`: the name a field was declared with."""
    return field_name.rsplit(".", 1)[-1].split("[", 1)[0]


_SCALARS: dict[Any, Callable[[Any, str], Any]] = {
    bool: _parse_bool, int: _parse_int, float: _parse_float, str: _parse_str,
}


def _parse_enum(tp: type[enum.Enum], value: Any, field_name: str) -> enum.Enum:
    for member in tp:
        if member.value == value and type(member.value) is type(value):
            return member
    raise ValidationError(field_name, f"must be one of {', '.join(repr(m.value) for m in tp)}")


def _parse_sequence(tp: Any, value: Any, field_name: str) -> Any:
    if not isinstance(value, list):
        raise ValidationError(field_name, "must be an array")
    items = typing.get_args(tp)
    item_tp = items[0] if items else Any
    parsed = [parse(item_tp, v, f"{field_name}[{i}]") for i, v in enumerate(value)]
    kind = typing.get_origin(tp) or tp
    if kind is tuple:
        return tuple(parsed)
    if kind in _SETS:
        try:
            return frozenset(parsed)
        except TypeError:
            raise ValidationError(field_name, "items must be scalar") from None
    return parsed


def _parse_mapping(tp: Any, value: Any, field_name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationError(field_name, "must be an object")
    kv = typing.get_args(tp)
    val_tp = kv[1] if kv else Any
    return {k: parse(val_tp, v, f"{field_name}.{k}") for k, v in value.items()}


def parse_query(tp: Any, raw: str, field_name: str) -> Any:
    """A query-string or path value: scalars only, converted from text before the usual checks.
    Each candidate keeps its `Annotated` range, so a bound applies to query values too."""
    last: ValidationError | None = None
    for cand, plain in _per_type(_query_candidates, tp):
        try:
            return parse(cand, _from_text(plain, raw, field_name), field_name)
        except ValidationError as exc:
            last = exc
    assert last is not None
    raise last


@functools.cache
def _query_candidates(tp: Any) -> tuple[tuple[Any, Any], ...]:
    """The types a text value may be converted to, each with and without its `Annotated`."""
    args = union_args(strip_annotated(tp))
    candidates = [a for a in args if a is not NoneType] if args is not None else [tp]
    return tuple((c, strip_annotated(c)) for c in candidates)


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
