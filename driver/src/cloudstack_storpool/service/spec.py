"""An operation of the service: one driver function behind one HTTP method and path.

`operation("POST /v1/volumes", volumes.create_volume)` is all it takes to publish a driver
function: its parameters (after `ctx`) become the path placeholders, the query string (GET and
DELETE) or the JSON body (POST, PUT, PATCH), each typed from the signature; its return type is
the response. A function that takes a single request dataclass gets that dataclass's fields
instead. The OpenAPI document is generated from the same objects (openapi.py), so what is
documented is exactly what is validated and called.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import operator
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal
from urllib.parse import unquote

from cloudstack_storpool.driver.context import DriverContext
from cloudstack_storpool.driver.templates import TemplateSource
from cloudstack_storpool.errors import Conflict, ValidationError
from cloudstack_storpool.poolconfig import PoolSpec
from cloudstack_storpool.service.schema import SchemaBuilder
from cloudstack_storpool.typedjson import (
    FieldSpec,
    Unresolved,
    dataclass_fields,
    is_dataclass_type,
    is_scalar,
    parse_fields,
    parse_query,
    resolve_hints,
    union_args,
)
from cloudstack_storpool.uuids import Uuid

Location = Literal["path", "query", "body"]
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
METHODS = frozenset({"GET", "DELETE", *BODY_METHODS})
IDEMPOTENCY_FIELD = "idempotency_key"
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
TYPE_CHECKING_NAMES: Mapping[str, Any] = {"DriverContext": DriverContext, "PoolSpec": PoolSpec,
                                          "TemplateSource": TemplateSource}
"""Types the driver's modules import only for type checkers (import cycles) and name in the
signatures this table publishes: resolved here, explicitly. A new one fails the table at import
(`cannot resolve`), naming the function and parameter."""


@dataclasses.dataclass(frozen=True)
class Param:
    name: str
    type: Any
    required: bool
    default: Any
    location: Location


@dataclasses.dataclass(frozen=True)
class Operation:
    name: str
    """operationId, and the name jobs report."""
    method: str
    path: str
    func: Callable[..., Any]
    job: bool
    """Runs in the background and answers 202 with a job to poll (may involve an agent copy)."""
    params: tuple[Param, ...]
    request_class: type | None
    result_type: Any
    summary: str
    description: str
    tag: str
    pattern: re.Pattern[str] = dataclasses.field(repr=False, compare=False)
    bound: tuple[str, ...] = ()
    """Parameters filled by the service from its configuration (see `operation(bind=...)`)."""
    subject: str | None = None
    """The parameter naming the CloudStack object the operation concerns (log lines and jobs
    carry its value): see `operation(subject=...)`."""

    def subject_of(self, args: Mapping[str, Any]) -> str | None:
        value = args.get(self.subject) if self.subject is not None else None
        return value if isinstance(value, str) and value else None

    @property
    def status(self) -> int:
        if self.job:
            return 202
        return 204 if self.result_type is None else 200

    @functools.cached_property
    def body_params(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.location == "body")

    @functools.cached_property
    def path_params(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.location == "path")

    @functools.cached_property
    def query_params(self) -> dict[str, Param]:
        return {p.name: p for p in self.params if p.location == "query"}

    @functools.cached_property
    def body_fields(self) -> tuple[FieldSpec, ...]:
        """The body parameters as the request parser and the schema builder take them."""
        return tuple(FieldSpec(p.name, p.type, p.required, p.default) for p in self.body_params)

    @property
    def accepts_body(self) -> bool:
        return self.method in BODY_METHODS

    def match(self, path: str) -> dict[str, str] | None:
        m = self.pattern.match(path)
        return None if m is None else {k: unquote(v) for k, v in m.groupdict().items()}

    def parse(self, path_args: Mapping[str, str], query: Mapping[str, list[str]], body: Any) -> dict[str, Any]:
        """Typed arguments from one request, or ValidationError naming the first bad field."""
        args = {p.name: parse_query(p.type, path_args[p.name], p.name) for p in self.path_params}
        args.update(self._query_args(query))
        if self.accepts_body:
            extra = {IDEMPOTENCY_FIELD} if self.job else set()
            args.update(parse_fields(self.body_fields, {} if body is None else body, what="body",
                                     also_allowed=extra))
        return args

    def _query_args(self, query: Mapping[str, list[str]]) -> dict[str, Any]:
        """The query string: only known parameters, each at most once."""
        params = self.query_params
        for key in query:
            if key not in params:
                raise ValidationError(key, f"unknown query parameter (allowed: {', '.join(sorted(params)) or 'none'})")
        args: dict[str, Any] = {}
        for p in params.values():
            values = query.get(p.name)
            if not values:
                if p.required:
                    raise ValidationError(p.name, "is required")
                continue
            if len(values) > 1:
                raise ValidationError(p.name, "given more than once")
            args[p.name] = parse_query(p.type, values[0], p.name)
        return args

    def call(self, ctx: DriverContext, args: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> Any:
        """Run the driver function; `config` supplies the bound parameters."""
        extra: dict[str, Any] = {}
        for name in self.bound:
            value = (config or {}).get(name)
            if value is None:
                raise Conflict(f"this service process has no {name} configured; {self.name} is unavailable")
            extra[name] = value
        if self.request_class is not None:
            return self.func(ctx, self.request_class(**args), **extra)
        return self.func(ctx, **args, **extra)


def operation(route: str, func: Callable[..., Any], *, job: bool = False, name: str | None = None,
              exclude: tuple[str, ...] = (), bind: tuple[str, ...] = (), tag: str | None = None,
              subject: str | None = None) -> Operation:
    """Publish `func(ctx, ...)` at `route` ("METHOD /path/{param}").

    `exclude` hides parameters that have defaults and make no sense over HTTP (callbacks,
    test hooks). `bind` names parameters the service fills from its own configuration (e.g.
    `pools_file`), never from the request. Everything else is derived; an unsupported signature
    fails here, at import, so a bad line in the table never reaches a client.
    """
    method, path = _split_route(route)
    where = f"{func.__module__}.{getattr(func, '__qualname__', repr(func))}"
    hints = resolve_hints(func, TYPE_CHECKING_NAMES)
    request_class, fields = _published_fields(func, hints, where, exclude, bind)
    params = _place(fields, path, method, where)
    if job and IDEMPOTENCY_FIELD in {p.name for p in params}:
        raise TypeError(f"{where}: parameter name {IDEMPOTENCY_FIELD!r} is reserved for jobs")
    result_type = _result_type(hints, where)
    _check_expressible(params, result_type)
    op_name = name or func.__name__
    summary, _, description = (inspect.getdoc(func) or "").partition("\n\n")
    return Operation(
        name=op_name, method=method, path=path, func=func, job=job, params=params,
        request_class=request_class, result_type=result_type,
        summary=" ".join(summary.split()) or op_name.replace("_", " "), description=description.strip(),
        tag=tag or _default_tag(path), pattern=_route_pattern(path), bound=tuple(bind),
        subject=_subject(params, subject, where),
    )


def _subject(params: tuple[Param, ...], explicit: str | None, where: str) -> str | None:
    """The log subject's parameter: the one the table names (`subject=`), else the first of type
    `Uuid` (the function's most specific object comes first in the driver's signatures), else
    the first path placeholder. A rule of the types and the table, never of a name."""
    if explicit is not None:
        if explicit not in {p.name for p in params}:
            raise TypeError(f"{where}: subject {explicit!r} is not a parameter")
        return explicit
    for p in params:
        if Uuid in (p.type, *(union_args(p.type) or ())):
            return p.name
    return next((p.name for p in params if p.location == "path"), None)


def _split_route(route: str) -> tuple[str, str]:
    """"POST /v1/x" -> ("POST", "/v1/x")."""
    method, _, path = route.partition(" ")
    method = method.upper()
    if method not in METHODS or not path.startswith("/"):
        raise ValueError(f"bad route {route!r}: expected 'METHOD /path'")
    return method, path


def _published_fields(func: Callable[..., Any], hints: Mapping[str, Any], where: str, exclude: tuple[str, ...],
                      bind: tuple[str, ...]) -> tuple[type | None, list[FieldSpec]]:
    """(request dataclass or None, the fields a request supplies): the parameters after `ctx`,
    or the fields of the one request dataclass the function takes instead."""
    sig = inspect.signature(func)
    sig_params = list(sig.parameters.values())
    if not sig_params or sig_params[0].name != "ctx":
        raise TypeError(f"{where}: the first parameter must be `ctx: DriverContext`")
    for p in sig_params[1:]:
        if p.name in exclude and p.default is inspect.Parameter.empty:
            raise TypeError(f"{where}: cannot exclude {p.name!r}, it has no default")
    for b in bind:
        if b not in sig.parameters:
            raise TypeError(f"{where}: bound parameter {b!r} is not a parameter of the function")
    rest = [p for p in sig_params[1:] if p.name not in exclude and p.name not in bind]
    if len(rest) == 1 and is_dataclass_type(_narrow(hints.get(rest[0].name, Any))):
        request_class: type = hints[rest[0].name]
        return request_class, [f._replace(type=_narrow(f.type)) for f in dataclass_fields(request_class)]
    fields = []
    for p in rest:
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise TypeError(f"{where}: *args/**kwargs cannot be published")
        if p.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise TypeError(f"{where}: positional-only parameter {p.name!r} cannot be published")
        required = p.default is inspect.Parameter.empty
        fields.append(FieldSpec(p.name, _narrow(hints.get(p.name, Any)), required, None if required else p.default))
    return None, fields


def _place(fields: list[FieldSpec], path: str, method: str, where: str) -> tuple[Param, ...]:
    """Where each field comes from: a path placeholder, else the body (POST, PUT, PATCH) or the
    query string (GET, DELETE), which carries scalars only."""
    placeholders = _PLACEHOLDER.findall(path)
    names = {f.name for f in fields}
    for ph in placeholders:
        if ph not in names:
            raise TypeError(f"{where}: route placeholder {{{ph}}} is not a parameter of the function")
    params: list[Param] = []
    for f in fields:
        location: Location
        required = f.required
        if f.name in placeholders:
            location, required = "path", True
            if not is_scalar(f.type):
                raise TypeError(f"{where}: path parameter {f.name!r} must be a scalar")
        elif method in BODY_METHODS:
            location = "body"
        else:
            location = "query"
            if not is_scalar(f.type):
                raise TypeError(f"{where}: {f.name!r} is not a scalar; publish {method} {path} with POST instead")
        params.append(Param(f.name, f.type, required, f.default, location))
    return tuple(params)


def _result_type(hints: Mapping[str, Any], where: str) -> Any:
    """The response's type; None for a function that returns nothing (204)."""
    result_type = hints.get("return", Any)
    if isinstance(result_type, Unresolved):
        raise TypeError(f"{where}: cannot resolve the return annotation {result_type.text!r}")
    return None if result_type is type(None) else result_type


def _check_expressible(params: tuple[Param, ...], result_type: Any) -> None:
    """Fail now if any type cannot be expressed, rather than at the first request or in the doc."""
    probe = SchemaBuilder()
    for param in params:
        probe.schema(param.type, param.name)
    if result_type is not None:
        probe.schema(result_type, "return")


def _shape(path: str, *, template: bool = False) -> tuple[int, str | None]:
    """Segment count and the segment after the version; None for a template's placeholder."""
    segments = path.split("/")
    first = segments[2] if len(segments) > 2 else ""
    return len(segments), (None if template and "{" in first else first)


def _route_pattern(path: str) -> re.Pattern[str]:
    """`/v1/volumes/{volume_uuid}` -> a regex capturing `volume_uuid` from one path segment."""
    pieces = _PLACEHOLDER.split(path)
    regex = "".join(f"(?P<{piece}>[^/]+)" if i % 2 else re.escape(piece) for i, piece in enumerate(pieces))
    return re.compile(f"^{regex}$")


def _narrow(tp: Any) -> Any:
    """`PoolSpec | str` -> `str`: over HTTP a pool is named by its uuid or name, never sent whole
    (a PoolSpec carries the StorPool token)."""
    args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else ()
    if PoolSpec in args:
        rest = [a for a in args if a is not PoolSpec]
        if not rest:
            raise TypeError("a PoolSpec parameter cannot be published; take the pool's uuid or name")
        return functools.reduce(operator.or_, rest)
    if tp is PoolSpec:
        raise TypeError("a PoolSpec parameter cannot be published; take the pool's uuid or name")
    return tp


def _default_tag(path: str) -> str:
    """`/v1/volumes/{volume_uuid}/resize` -> `volumes`: operations group by resource."""
    parts = [p for p in path.strip("/").split("/") if p]
    return parts[1] if len(parts) > 1 else (parts[0] if parts else "service")


class OperationTable:
    """The routing table: operations by name, and the lookup of (method, path)."""

    def __init__(self, operations: tuple[Operation, ...]) -> None:
        seen: dict[str, Operation] = {}
        routes: set[tuple[str, str]] = set()
        for op in operations:
            if op.name in seen:
                raise ValueError(f"two operations named {op.name!r}")
            key = (op.method, _PLACEHOLDER.sub("{}", op.path))
            if key in routes:
                raise ValueError(f"two operations on {op.method} {op.path}")
            routes.add(key)
            seen[op.name] = op
        self.operations = operations
        self.by_name = seen
        # Candidates by the path's shape (segment count and first segment after `/v1/`): a
        # placeholder matches within one segment, so no other operation can match.
        by_shape: dict[tuple[int, str | None], list[tuple[int, Operation]]] = {}
        for i, op in enumerate(operations):
            by_shape.setdefault(_shape(op.path, template=True), []).append((i, op))
        # A literal first segment's candidates, merged with the placeholder ones of the same
        # count in table order, once; a path of no known first segment only has the latter.
        self._by_shape: dict[tuple[int, str | None], tuple[Operation, ...]] = {
            (count, first): tuple(op for _i, op in sorted(ops + (by_shape.get((count, None), []) if first else []),
                                                         key=lambda c: c[0]))
            for (count, first), ops in by_shape.items()
        }

    def resolve(self, method: str, path: str) -> tuple[Operation | None, dict[str, str], list[str]]:
        """(operation, path arguments, allowed methods): no operation + methods = 405, none = 404.

        A literal segment wins over a placeholder (`/v1/pools/stats` before `/v1/pools/{uuid}`)."""
        allowed: list[str] = []
        best: tuple[int, Operation, dict[str, str]] | None = None
        count, first = _shape(path)
        candidates = self._by_shape.get((count, first)) or self._by_shape.get((count, None), ())
        for op in candidates:
            args = op.match(path)
            if args is None:
                continue
            if op.method != method:
                allowed.append(op.method)
                continue
            score = len(args)
            if best is None or score < best[0]:
                best = (score, op, args)
        if best is None:
            return None, {}, sorted(set(allowed))
        return best[1], best[2], []
