"""The signature -> schema -> validation derivation the service and its OpenAPI both rest on."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from cloudstack_storpool import uuids
from cloudstack_storpool.driver.context import DriverContext
from cloudstack_storpool.errors import ValidationError
from cloudstack_storpool.poolconfig import PoolSpec, Secret
from cloudstack_storpool.service import schema
from cloudstack_storpool.service.spec import OperationTable, operation
from cloudstack_storpool.typedjson import to_json
from cloudstack_storpool.uuids import Uuid


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True)
class Where:
    """Where a copy goes."""

    store: str
    path: str
    format: str | None = None

    def __post_init__(self) -> None:
        if self.path.startswith("/"):
            raise ValidationError("where.path", "must be relative")


@dataclass(frozen=True)
class Answer:
    volume_uuid: Uuid
    size: int
    tags: dict[str, str] = field(default_factory=dict)
    color: Color = Color.RED
    token: Secret = field(default_factory=lambda: Secret("hidden-token"))


def make(ctx: DriverContext, pool: PoolSpec | str, volume_uuid: Uuid, size: int, *,
         where: Where | None = None, kind: Literal["root", "data"] = "data", ratio: float = 1.0,
         names: list[str] | None = None, color: Color = Color.BLUE) -> Answer:
    """Make a thing.

    Longer description."""
    return Answer(volume_uuid, size)


def nothing(ctx: DriverContext, volume_uuid: Uuid) -> None:
    return None


@dataclass(frozen=True)
class Req:
    volume_uuid: Uuid
    count: int = 1


def with_request(ctx: DriverContext, req: Req) -> list[int]:
    return [req.count]


def test_body_schema_and_parse_follow_the_signature() -> None:
    op = operation("POST /v1/things", make)
    assert [(p.name, p.location, p.required) for p in op.params] == [
        ("pool", "body", True), ("volume_uuid", "body", True), ("size", "body", True), ("where", "body", False),
        ("kind", "body", False), ("ratio", "body", False), ("names", "body", False), ("color", "body", False)]
    b = schema.SchemaBuilder()
    assert b.schema(op.params[0].type, "pool") == {"type": "string"}  # PoolSpec narrowed away
    assert b.schema(Uuid, "volume_uuid") == {"type": "string", "format": "uuid", "pattern": uuids.PATTERN,
                                             "minLength": 36, "maxLength": 36}
    assert b.schema(str, "volume_uuid") == {"type": "string"}  # a rule of the type, not of the name
    assert b.schema(op.params[3].type, "where") == {"anyOf": [{"$ref": "#/components/schemas/Where"},
                                                              {"type": "null"}]}
    assert b.components["Where"]["required"] == ["store", "path"]
    assert b.components["Where"]["description"] == "Where a copy goes."
    assert b.schema(op.params[4].type, "kind") == {"enum": ["data", "root"]}
    assert op.summary == "Make a thing." and op.description == "Longer description."
    uid = "0b9c8f4e-2c33-4e0b-9e7a-1f6e2b9d1c11"
    args = op.parse({}, {}, {"pool": "p", "volume_uuid": uid, "size": 5, "where": {"store": "/s", "path": "a/b"},
                             "kind": "root", "ratio": 2, "names": ["x"], "color": "red"})
    assert args["volume_uuid"] == uid
    assert args["where"] == Where("/s", "a/b")
    assert args["ratio"] == 2.0 and isinstance(args["ratio"], float)
    assert args["color"] is Color.RED


@pytest.mark.parametrize(("body", "field_name"), [
    ({"pool": "p", "volume_uuid": "nope", "size": 1}, "volume_uuid"),
    ({"pool": "p", "volume_uuid": "0B9C8F4E-2C33-4E0B-9E7A-1F6E2B9D1C11", "size": 1}, "volume_uuid"),
    ({"pool": "p", "volume_uuid": "0b9c8f4e2c334e0b9e7a1f6e2b9d1c11", "size": 1}, "volume_uuid"),
    ({"pool": "p", "volume_uuid": "0b9c8f4e-2c33-4e0b-9e7a-1f6e2b9d1c11", "size": 1 << 70}, "size"),
    ({"pool": "p", "volume_uuid": "0b9c8f4e-2c33-4e0b-9e7a-1f6e2b9d1c11", "size": 1, "ratio": 10 ** 400}, "ratio"),
    ({"pool": "p", "volume_uuid": "0b9c8f4e-2c33-4e0b-9e7a-1f6e2b9d1c11", "size": True}, "size"),
    ({"pool": "p", "volume_uuid": "0b9c8f4e-2c33-4e0b-9e7a-1f6e2b9d1c11", "size": 1 << 63}, "size"),
    ({"pool": "p", "volume_uuid": "0b9c8f4e-2c33-4e0b-9e7a-1f6e2b9d1c11"}, "size"),
    ({"pool": "p", "volume_uuid": "0b9c8f4e-2c33-4e0b-9e7a-1f6e2b9d1c11", "size": 1, "extra": 1}, "extra"),
    ({"pool": "p", "volume_uuid": "0b9c8f4e-2c33-4e0b-9e7a-1f6e2b9d1c11", "size": 1, "kind": "x"}, "kind"),
    ({"pool": "p", "volume_uuid": "0b9c8f4e-2c33-4e0b-9e7a-1f6e2b9d1c11", "size": 1, "where": {"store": "s"}},
     "where.path"),
    ({"pool": "p", "volume_uuid": "0b9c8f4e-2c33-4e0b-9e7a-1f6e2b9d1c11", "size": 1,
      "where": {"store": "s", "path": "/abs"}}, "where.path"),
    ({"pool": "p", "volume_uuid": "0b9c8f4e-2c33-4e0b-9e7a-1f6e2b9d1c11", "size": 1, "names": ["a", 3]},
     "names[1]"),
    ({"pool": "p", "volume_uuid": "0b9c8f4e-2c33-4e0b-9e7a-1f6e2b9d1c11", "size": 1, "ratio": float("nan")},
     "ratio"),
    ({"pool": None, "volume_uuid": "0b9c8f4e-2c33-4e0b-9e7a-1f6e2b9d1c11", "size": 1}, "pool"),
    ({"pool": "a\x00b", "volume_uuid": "0b9c8f4e-2c33-4e0b-9e7a-1f6e2b9d1c11", "size": 1}, "pool"),
])
def test_bad_input_names_the_field(body: dict[str, Any], field_name: str) -> None:
    op = operation("POST /v1/things", make)
    with pytest.raises(ValidationError) as err:
        op.parse({}, {}, body)
    assert err.value.field == field_name


def test_path_parameters_and_non_scalars_in_get() -> None:
    op = operation("POST /v1/things/{volume_uuid}", make)
    assert {p.name: p.location for p in op.params}["volume_uuid"] == "path"
    m = op.match("/v1/things/0b9c8f4e-2c33-4e0b-9e7a-1f6e2b9d1c11")
    assert m == {"volume_uuid": "0b9c8f4e-2c33-4e0b-9e7a-1f6e2b9d1c11"}
    assert op.match("/v1/things/a/b") is None
    assert op.match("/v1/things/a%2Fb") == {"volume_uuid": "a/b"}
    # `where` and `names` are not scalars: a query string cannot carry them.
    with pytest.raises(TypeError, match="POST"):
        operation("GET /v1/things/{volume_uuid}", make)
    assert operation("GET /v1/things/{volume_uuid}", make, exclude=("where", "names")).params[3].location == "query"


def test_query_scalars() -> None:
    def get(ctx: DriverContext, volume_uuid: Uuid, *, count: int = 1, flag: bool = False,
            ratio: float | None = None) -> dict[str, Any]:
        return {}

    op = operation("GET /v1/x/{volume_uuid}", get)
    uid = "0b9c8f4e-2c33-4e0b-9e7a-1f6e2b9d1c11"
    assert op.parse({"volume_uuid": uid}, {"count": ["3"], "flag": ["true"], "ratio": ["0.5"]}, None) == {
        "volume_uuid": uid, "count": 3, "flag": True, "ratio": 0.5}
    for query, fname in (({"count": ["x"]}, "count"), ({"flag": ["1"]}, "flag"), ({"other": ["1"]}, "other"),
                         ({"count": ["1", "2"]}, "count")):
        with pytest.raises(ValidationError) as err:
            op.parse({"volume_uuid": uid}, query, None)
        assert err.value.field == fname


def test_request_dataclass_and_none_result() -> None:
    op = operation("POST /v1/r", with_request)
    assert op.request_class is Req and op.status == 200
    args = op.parse({}, {}, {"volume_uuid": "0b9c8f4e-2c33-4e0b-9e7a-1f6e2b9d1c11", "count": 3})
    assert op.call(None, args) == [3]  # type: ignore[arg-type]
    assert operation("DELETE /v1/n/{volume_uuid}", nothing).status == 204
    assert operation("POST /v1/j", with_request, job=True).status == 202


def test_results_to_json_mask_secrets_and_convert_enums() -> None:
    out = to_json(Answer("u", 1, {"a": "b"}))
    assert out == {"volume_uuid": "u", "size": 1, "tags": {"a": "b"}, "color": "red", "token": "***"}
    assert to_json(frozenset({"b", "a"})) == ["a", "b"]
    assert to_json((1, None, 2.5)) == [1, None, 2.5]


def test_unpublishable_signatures_fail_when_the_table_is_built() -> None:
    def no_ctx(pool: str) -> None: ...
    def varargs(ctx: DriverContext, *names: str) -> None: ...
    def callback(ctx: DriverContext, progress: Any = None, fn: object = None) -> None: ...
    def spec_only(ctx: DriverContext, pool: PoolSpec) -> None: ...
    def bad_map(ctx: DriverContext, m: dict[int, str]) -> None: ...

    with pytest.raises(TypeError, match="ctx"):
        operation("POST /v1/a", no_ctx)
    with pytest.raises(TypeError, match=r"\*args"):
        operation("POST /v1/a", varargs)
    with pytest.raises(TypeError, match="PoolSpec"):
        operation("POST /v1/a", spec_only)
    with pytest.raises(TypeError, match="keys"):
        operation("POST /v1/a", bad_map)
    with pytest.raises(TypeError, match="placeholder"):
        operation("GET /v1/a/{missing}", nothing)
    with pytest.raises(ValueError, match="route"):
        operation("FETCH /v1/a", nothing)
    with pytest.raises(TypeError, match="no default"):
        operation("POST /v1/a", nothing, exclude=("volume_uuid",))
    with pytest.raises(ValueError, match="two operations"):
        OperationTable((operation("POST /v1/a", nothing), operation("POST /v1/a", nothing, name="other")))


def test_type_checking_only_imports_are_resolved() -> None:
    # volumes.py imports TemplateSource only under TYPE_CHECKING; the table names it explicitly
    # (spec.TYPE_CHECKING_NAMES), so its signature still publishes.
    from cloudstack_storpool.driver import templates, volumes

    op = operation("POST /v1/volumes/from-template", volumes.create_from_template)
    source = next(p for p in op.params if p.name == "source")
    assert source.type == templates.TemplateSource | None


def test_router_prefers_literal_segments_and_reports_allowed_methods() -> None:
    def lit(ctx: DriverContext) -> int:
        return 1

    def var(ctx: DriverContext, volume_uuid: str) -> int:
        return 2

    table = OperationTable((operation("GET /v1/v/{volume_uuid}", var), operation("POST /v1/v/special", lit)))
    op, args, _ = table.resolve("POST", "/v1/v/special")
    assert op is not None and op.name == "lit" and args == {}
    op, args, _ = table.resolve("GET", "/v1/v/special")
    assert op is not None and op.name == "var" and args == {"volume_uuid": "special"}
    op, _, allowed = table.resolve("DELETE", "/v1/v/x")
    assert op is None and allowed == ["GET"]
    assert table.resolve("GET", "/v1/nothing") == (None, {}, [])


def test_every_route_of_the_service_resolves_to_itself_through_the_shape_index() -> None:
    """The router only tries operations of the request path's shape; for every route of the
    real table (placeholders filled), and for each method of a path, that agrees with trying
    every operation."""
    import re

    from cloudstack_storpool.service.operations import TABLE

    for op in TABLE.operations:
        path = re.sub(r"\{[^}]+\}", "x-1", op.path)
        for method in ("GET", "POST", "DELETE", "PUT"):
            matching = [o for o in TABLE.operations if o.match(path) is not None]
            same = [o for o in matching if o.method == method]
            want = min(same, key=lambda o: len(o.match(path) or {}), default=None)
            got, _args, allowed = TABLE.resolve(method, path)
            assert got is want, (method, path)
            if want is None:
                assert allowed == sorted({o.method for o in matching})
        assert TABLE.resolve(op.method, path)[0] is op


def test_renaming_a_parameter_changes_neither_its_checks_nor_its_schema() -> None:
    """The uuid rule, the 64-bit bound and the NUL rule belong to the types: the same signature
    with other parameter names refuses the same values, naming the new names."""
    def named(ctx: DriverContext, volume_uuid: Uuid, size: int) -> None: ...
    def renamed(ctx: DriverContext, target: Uuid, amount: int) -> None: ...
    def plain(ctx: DriverContext, volume_uuid: str) -> None: ...

    bad_uuid, big = "0B9C8F4E-2C33-4E0B-9E7A-1F6E2B9D1C11", 1 << 63
    a, b = operation("POST /v1/a", named), operation("POST /v1/b", renamed)
    for (fa, va), (fb, vb) in ((("volume_uuid", bad_uuid), ("target", bad_uuid)), (("size", big), ("amount", big))):
        body_a = {"volume_uuid": "0b9c8f4e-2c33-4e0b-9e7a-1f6e2b9d1c11", "size": 1, fa: va}
        body_b = {"target": "0b9c8f4e-2c33-4e0b-9e7a-1f6e2b9d1c11", "amount": 1, fb: vb}
        with pytest.raises(ValidationError) as ea:
            a.parse({}, {}, body_a)
        with pytest.raises(ValidationError) as eb:
            b.parse({}, {}, body_b)
        assert (ea.value.field, eb.value.field) == (fa, fb)
        assert str(ea.value).replace(fa, "?") == str(eb.value).replace(fb, "?")
    sa, sb = schema.SchemaBuilder(), schema.SchemaBuilder()
    assert sa.object_schema(a.body_fields)["properties"]["volume_uuid"] == sb.object_schema(b.body_fields)["properties"]["target"]
    # A name alone carries no rule: a plain `str` named `..._uuid` takes any string.
    assert operation("POST /v1/c", plain).parse({}, {}, {"volume_uuid": "anything"}) == {"volume_uuid": "anything"}


def test_the_log_subject_is_the_first_uuid_typed_parameter_whatever_its_name() -> None:
    def named(ctx: DriverContext, pool: str, volume_uuid: Uuid, size: int) -> None: ...
    def renamed(ctx: DriverContext, pool: str, target: Uuid, size: int) -> None: ...
    def no_uuid(ctx: DriverContext, host_id: str, force: bool = False) -> None: ...

    uid = "0b9c8f4e-2c33-4e0b-9e7a-1f6e2b9d1c11"
    a, b = operation("POST /v1/a", named), operation("POST /v1/b", renamed)
    assert a.subject_of(a.parse({}, {}, {"pool": "p", "volume_uuid": uid, "size": 1})) == uid
    assert b.subject_of(b.parse({}, {}, {"pool": "p", "target": uid, "size": 1})) == uid
    # Without a uuid parameter: the route's placeholder, or what the table names.
    assert operation("POST /v1/hosts/{host_id}/x", no_uuid).subject == "host_id"
    assert operation("POST /v1/y", renamed, subject="pool").subject == "pool"
    with pytest.raises(TypeError, match="subject"):
        operation("POST /v1/y", renamed, subject="volume_uuid")
