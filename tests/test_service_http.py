"""The service's HTTP layer on loopback: auth, routing, error mapping, jobs, OpenAPI.

The framework is exercised over real sockets with small driver-shaped functions (the real
driver is exercised against the local stack in integration/tests/service/)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import requests

from cloudstack_storpool.driver.context import DriverContext
from cloudstack_storpool.errors import (
    AgentError,
    CloudStackConfigError,
    CloudStackError,
    CloudStackTimeout,
    CloudStackUnreachable,
    Conflict,
    NotFound,
    SpBusy,
    SpExists,
    SpNotFound,
    SpTransient,
    SpUnreachable,
    StorPoolError,
    ValidationError,
)
from cloudstack_storpool.poolconfig import PoolsFile, PoolSpec, Secret
from cloudstack_storpool.service import ServiceServer, make_server, serve_in_thread
from cloudstack_storpool.service.openapi import document
from cloudstack_storpool.service.operations import TABLE
from cloudstack_storpool.service.spec import OperationTable, operation
from cloudstack_storpool.uuids import Uuid

TOKEN = "service-token-0123456789"
POOL_TOKEN = "pool-secret-token-42"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"


def _ctx() -> DriverContext:
    pool = PoolSpec(host="127.0.0.1", port=1, token=Secret(POOL_TOKEN), template="ssd",
                    uuid="6a3e0c1e-58a6-4b0f-9f39-1b8e3c3f2a10", name="p1")
    none = cast(Any, None)
    return DriverContext(pools=PoolsFile((pool,)), cloudstack=none, settings=none, agents=none)


# -- a small driver-shaped table --------------------------------------------------------------

RAISE: dict[str, BaseException] = {
    "validation": ValidationError("size", "must be positive"),
    "notfound": NotFound("no such volume"),
    "spnotfound": SpNotFound("objectDoesNotExist", "no volume x"),
    "conflict": Conflict("VM is running"),
    "exists": SpExists("objectExists", "exists"),
    "busy": SpBusy("busy", "is open at client 3"),
    "transient": SpTransient("transient", "try later"),
    "unreachable": SpUnreachable("unreachable", "connection refused"),
    "agent": AgentError("qemu-img failed"),
    "cloudstack": CloudStackError("listVolumes", "boom", errorcode=530),
    "cs-unreachable": CloudStackUnreachable("listVolumes", "cannot reach http://cs:8080/client/api"),
    "cs-timeout": CloudStackTimeout("generateAlert", "async job 7 did not finish in time", jobid="7"),
    "cs-config": CloudStackConfigError("no CloudStack endpoint configured"),
    "storpool": StorPoolError("insufficientResources", "no space"),
    "bug": KeyError(f"internal detail {POOL_TOKEN}"),
    "leaky": Conflict(f"conflict mentioning {POOL_TOKEN} and {TOKEN}"),
}
STATUS = {"validation": 400, "notfound": 404, "spnotfound": 404, "conflict": 409, "exists": 409, "busy": 409,
          "transient": 503, "unreachable": 503, "agent": 502, "cloudstack": 502,
          "cs-unreachable": 503, "cs-timeout": 503, "cs-config": 502, "storpool": 502, "bug": 500,
          "leaky": 409}

GATE = threading.Event()
CALLS: list[str] = []


def fail(ctx: DriverContext, kind: str) -> dict[str, str]:
    """Raise the error named `kind`."""
    raise RAISE[kind]


def echo(ctx: DriverContext, volume_uuid: Uuid, *, size: int = 1) -> dict[str, Any]:
    return {"volume_uuid": volume_uuid, "size": size}


def slow(ctx: DriverContext, *, name: str, fail_with: str | None = None) -> dict[str, str]:
    """Waits for the test's gate (a stand-in for an agent copy)."""
    CALLS.append(name)
    GATE.wait(10)
    if fail_with:
        raise RAISE[fail_with]
    return {"name": name}


def gone(ctx: DriverContext, volume_uuid: Uuid) -> None:
    return None


SMALL = OperationTable((
    operation("POST /v1/fail", fail),
    operation("GET /v1/echo/{volume_uuid}", echo),
    operation("POST /v1/echo/{volume_uuid}", echo, name="echo_post"),
    operation("POST /v1/slow", slow, job=True),
    operation("DELETE /v1/echo/{volume_uuid}", gone),
))


def _serve(table: OperationTable | None) -> Iterator[ServiceServer]:
    server = make_server(_ctx(), TOKEN, table=table)
    serve_in_thread(server)
    try:
        yield server
    finally:
        GATE.set()
        server.close(job_timeout=5)


@pytest.fixture
def small() -> Iterator[ServiceServer]:
    GATE.clear()
    CALLS.clear()
    yield from _serve(SMALL)


@pytest.fixture(scope="module")
def real() -> Iterator[ServiceServer]:
    yield from _serve(None)


AUTH = {"Authorization": f"Bearer {TOKEN}"}
UID = "0b9c8f4e-2c33-4e0b-9e7a-1f6e2b9d1c11"


def _routes(doc: dict[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for path, methods in doc["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", UID.replace("-", "")[:32] if "job_id" in path else UID, path)
        out.extend((m.upper(), concrete) for m in methods)
    return out


# -- auth -------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": "Bearer "},
])
def test_every_route_refuses_a_missing_or_wrong_token(real: ServiceServer, headers: dict[str, str]) -> None:
    routes = _routes(document(TABLE))
    assert len(routes) > 30
    routes += [("GET", "/no/such/route"), ("PUT", "/v1/volumes"), ("OPTIONS", "/v1/pools")]
    for method, path in routes:
        r = requests.request(method, real.url + path, headers=headers, json={"pool": "p1"}, timeout=10)
        assert r.status_code == 401, (method, path, r.status_code)
        assert r.headers["WWW-Authenticate"] == "Bearer"
        assert r.json()["error"]["code"] == "unauthorized"


def test_401_comes_before_the_body_is_read(small: ServiceServer) -> None:
    """An unauthenticated client announcing a huge body gets its 401 without sending it."""
    host, port = small.server_address[:2]
    with socket.create_connection((str(host), int(port)), timeout=5) as s:
        s.sendall(b"POST /v1/echo/x HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000000000\r\n\r\n{")
        reply = s.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 401"), reply
    assert "Connection: close" in reply


# -- routing and validation -------------------------------------------------------------------


def test_sync_operation_round_trip(small: ServiceServer) -> None:
    r = requests.get(f"{small.url}/v1/echo/{UID}", params={"size": "7"}, headers=AUTH, timeout=5)
    assert r.status_code == 200 and r.json() == {"volume_uuid": UID, "size": 7}
    # One spelling per uuid: the driver derives StorPool names from it.
    r = requests.get(f"{small.url}/v1/echo/{UID.upper()}", params={"size": "7"}, headers=AUTH, timeout=5)
    assert r.status_code == 400 and r.json()["error"]["field"] == "volume_uuid"
    r = requests.post(f"{small.url}/v1/echo/{UID}", json={"size": 9}, headers=AUTH, timeout=5)
    assert r.json() == {"volume_uuid": UID, "size": 9}
    r = requests.delete(f"{small.url}/v1/echo/{UID}", headers=AUTH, timeout=5)
    assert r.status_code == 204 and r.content == b""


def test_the_number_of_workers_is_the_callers_to_choose() -> None:
    """`serve --workers`: the threads that answer requests (synchronous driver calls included)
    are as many as asked, and a number below one is refused naming the field."""
    before = set(threading.enumerate())  # other tests' servers may still be serving
    server = make_server(_ctx(), TOKEN, table=SMALL, workers=3)
    serve_in_thread(server)
    try:
        r = requests.get(f"{server.url}/v1/echo/{UID}", params={"size": "7"}, headers=AUTH, timeout=5)
        assert r.status_code == 200
        started = sorted(t.name for t in set(threading.enumerate()) - before if t.name.startswith("service-worker_"))
        assert started == [f"service-worker_{i}" for i in range(3)]
    finally:
        server.close(job_timeout=5)
    with pytest.raises(ValidationError) as refused:
        make_server(_ctx(), TOKEN, table=SMALL, workers=0)
    assert refused.value.field == "workers"


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "field_name"), [
    ("GET", f"/v1/echo/{UID}", {"params": {"size": "x"}}, 400, "size"),
    ("GET", f"/v1/echo/{UID}", {"params": {"other": "1"}}, 400, "other"),
    ("GET", "/v1/echo/not-a-uuid", {}, 400, "volume_uuid"),
    ("POST", f"/v1/echo/{UID}", {"data": b"{not json"}, 400, "body"),
    ("POST", f"/v1/echo/{UID}", {"json": [1, 2]}, 400, "body"),
    ("POST", f"/v1/echo/{UID}", {"json": {"volume_uuid": UID}}, 400, "volume_uuid"),
    ("POST", f"/v1/echo/{UID}", {"data": b"x" * (1 << 21)}, 400, "body"),
    ("POST", "/v1/fail", {"json": {}}, 400, "kind"),
    ("GET", "/v1/jobs/xyz", {}, 400, "job_id"),
])
def test_bad_requests_are_400_naming_the_field(small: ServiceServer, method: str, path: str, kwargs: dict[str, Any],
                                               status: int, field_name: str) -> None:
    r = requests.request(method, small.url + path, headers=AUTH, timeout=5, **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["error"]["field"] == field_name


def test_unknown_routes_and_methods(small: ServiceServer) -> None:
    r = requests.get(small.url + "/v1/nothing", headers=AUTH, timeout=5)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not-found"
    for method in ("PUT", "PATCH", "OPTIONS", "HEAD", "PROPFIND"):
        r = requests.request(method, f"{small.url}/v1/echo/{UID}", headers=AUTH, timeout=5)
        assert r.status_code == 405, method
        assert r.headers["Allow"] == "DELETE, GET, POST"
    # A method HTTP does not define cannot be framed: refused before routing.
    r = requests.request("BREW", f"{small.url}/v1/echo/{UID}", headers=AUTH, timeout=5)
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad-request"
    r = requests.post(small.url + "/openapi.json", headers=AUTH, timeout=5)
    assert r.status_code == 405


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(RAISE))
def test_errors_map_to_statuses_and_never_leak_secrets(small: ServiceServer, kind: str,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("DEBUG"):
        r = requests.post(small.url + "/v1/fail", json={"kind": kind}, headers=AUTH, timeout=5)
    assert r.status_code == STATUS[kind], r.text
    err = r.json()["error"]
    assert set(err) <= {"code", "message", "field"}
    assert POOL_TOKEN not in r.text and TOKEN not in r.text
    assert POOL_TOKEN not in caplog.text and TOKEN not in caplog.text
    if kind == "bug":
        assert err["code"] == "internal" and "internal detail" not in err["message"]
        ref = re.search(r"ref ([0-9a-f]{12})", err["message"])
        assert ref and ref.group(1) in caplog.text  # the log has the detail under the same reference
    if kind == "validation":
        assert err["field"] == "size"
    if kind in ("transient", "unreachable"):
        assert r.headers["Retry-After"]
    if kind == "leaky":
        assert "***" in err["message"]


# -- jobs -------------------------------------------------------------------------------------


def _wait_job(server: ServiceServer, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        job = cast(dict[str, Any], requests.get(f"{server.url}/v1/jobs/{job_id}", headers=AUTH, timeout=5).json())
        if job["state"] in ("succeeded", "failed"):
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish")


def test_job_lifecycle_and_idempotency(small: ServiceServer) -> None:
    r = requests.post(small.url + "/v1/slow", json={"name": "a"}, headers={**AUTH, "Idempotency-Key": "k1"},
                      timeout=5)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["state"] in ("queued", "running") and job["idempotency_key"] == "k1"
    assert r.headers["Location"] == f"/v1/jobs/{job['id']}"
    # Same key, same request: the same job, not a second run.
    again = requests.post(small.url + "/v1/slow", json={"name": "a", "idempotency_key": "k1"}, headers=AUTH,
                          timeout=5)
    assert again.status_code == 200 and again.json()["id"] == job["id"]
    # Same key, different request: refused.
    other = requests.post(small.url + "/v1/slow", json={"name": "b"}, headers={**AUTH, "Idempotency-Key": "k1"},
                          timeout=5)
    assert other.status_code == 409 and other.json()["error"]["field"] == "idempotency_key"
    GATE.set()
    done = _wait_job(small, job["id"])
    assert done["state"] == "succeeded" and done["result"] == {"name": "a"} and done["error"] is None
    assert CALLS == ["a"]
    # After success the key still answers with the finished job.
    assert requests.post(small.url + "/v1/slow", json={"name": "a"}, headers={**AUTH, "Idempotency-Key": "k1"},
                         timeout=5).json()["id"] == job["id"]
    listed = requests.get(small.url + "/v1/jobs", headers=AUTH, timeout=5).json()["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]


def test_failed_job_reports_the_mapped_error_and_a_retry_runs_again(small: ServiceServer) -> None:
    GATE.set()
    body = {"name": "x", "fail_with": "busy"}
    first = requests.post(small.url + "/v1/slow", json=body, headers={**AUTH, "Idempotency-Key": "r"}, timeout=5)
    job = _wait_job(small, first.json()["id"])
    assert job["state"] == "failed"
    assert job["error"]["code"] == "busy" and job["error"]["status"] == 409
    retry = requests.post(small.url + "/v1/slow", json=body, headers={**AUTH, "Idempotency-Key": "r"}, timeout=5)
    assert retry.status_code == 202 and retry.json()["id"] != job["id"]
    assert CALLS == ["x", "x"]


def test_job_validation_happens_before_the_job(small: ServiceServer) -> None:
    r = requests.post(small.url + "/v1/slow", json={"nam": "a"}, headers=AUTH, timeout=5)
    assert r.status_code == 400 and r.json()["error"]["field"] == "nam"
    r = requests.post(small.url + "/v1/slow", json={"name": "a"}, headers={**AUTH, "Idempotency-Key": "x" * 201},
                      timeout=5)
    assert r.status_code == 400 and r.json()["error"]["field"] == "idempotency_key"
    assert requests.get(small.url + "/v1/jobs", headers=AUTH, timeout=5).json() == {"jobs": []}
    missing = requests.get(f"{small.url}/v1/jobs/{'0' * 32}", headers=AUTH, timeout=5)
    assert missing.status_code == 404


# -- OpenAPI ----------------------------------------------------------------------------------


def test_served_openapi_is_the_checked_in_document(real: ServiceServer) -> None:
    served = requests.get(real.url + "/openapi.json", headers=AUTH, timeout=10)
    assert served.status_code == 200
    assert served.json() == json.loads(DOCS.read_text()), (
        "docs/openapi.json is stale: python -m cloudstack_storpool.service.openapi > docs/openapi.json")


def test_openapi_generator_prints_the_checked_in_document() -> None:
    out = subprocess.run([sys.executable, "-m", "cloudstack_storpool.service.openapi"], capture_output=True,
                         text=True, check=True, timeout=120).stdout
    assert out == DOCS.read_text()


def test_openapi_documents_every_operation_of_the_table() -> None:
    doc = document(TABLE)
    ops = {o["operationId"]: (m, p) for p, ms in doc["paths"].items() for m, o in ms.items()}
    for op in TABLE.operations:
        assert ops[op.name] == (op.method.lower(), op.path)
        entry = doc["paths"][op.path][op.method.lower()]
        assert str(op.status) in entry["responses"]
        if op.job:
            assert any(p["name"] == "Idempotency-Key" for p in entry["parameters"])
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert POOL_TOKEN not in json.dumps(doc)


def test_health(small: ServiceServer) -> None:
    r = requests.get(small.url + "/v1/health", headers=AUTH, timeout=5)
    assert r.status_code == 200
    assert r.json()["pools"] == [{"uuid": "6a3e0c1e-58a6-4b0f-9f39-1b8e3c3f2a10", "name": "p1",
                                  "endpoint": "127.0.0.1:1", "template": "ssd"}]
    assert POOL_TOKEN not in r.text


@pytest.mark.parametrize("spelling", [
    "urn:" + UID.replace("-", ""),          # 36 characters, but not the 8-4-4-4-12 form
    UID.replace("-", "") + "----",
    "0b9c8f4e2-c33-4e0b-9e7a-1f6e2b9d1c11",  # dashes in the wrong places
])
def test_a_uuid_spelled_another_way_is_400_not_a_second_name(small: ServiceServer, spelling: str) -> None:
    """The driver names StorPool objects after the uuid: a second spelling of one uuid would
    address (or create) a second object for the same CloudStack volume."""
    assert len(spelling) == 36
    r = requests.get(f"{small.url}/v1/echo/{spelling}", headers=AUTH, timeout=5)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["field"] == "volume_uuid"


@pytest.mark.parametrize(("method", "path", "body", "field"), [
    ("POST", f"/v1/volumes/{UID}/resize", {"new_size": -512, "host_ids": []}, "new_size"),
    ("POST", f"/v1/volumes/{UID}/resize", {"new_size": 1 << 30, "host_ids": [], "custom_iops": 1 << 62}, "custom_iops"),
    ("POST", "/v1/gc", {"temporary_age": -1}, "temporary_age"),
    ("POST", "/v1/gc", {"temporary_age": 1 << 40}, "temporary_age"),
    ("POST", "/v1/volumes", {"pool": "p1", "volume_uuid": UID, "size": 1 << 30, "iops": 1 << 62}, "iops"),
])
def test_job_routes_refuse_out_of_range_numbers_before_a_job_starts(real: ServiceServer, method: str, path: str,
                                                                   body: dict[str, Any], field: str) -> None:
    r = requests.request(method, real.url + path, json=body, headers=AUTH, timeout=5)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["field"] == field
    assert real.jobs.list() == []


def test_gc_plan_query_is_range_checked(real: ServiceServer) -> None:
    r = requests.get(real.url + "/v1/gc/plan", params={"temporary_age": "-5"}, headers=AUTH, timeout=5)
    assert r.status_code == 400 and r.json()["error"]["field"] == "temporary_age"


def test_an_agents_refusal_of_a_location_is_400_naming_the_request_field() -> None:
    from cloudstack_storpool.agentapi.client import AgentRequestError
    from cloudstack_storpool.driver.secondary import agent_refusals
    from cloudstack_storpool.service.app import error_response

    with pytest.raises(ValidationError) as exc, agent_refusals("source"):
        raise AgentRequestError("store: /elsewhere is not under a secondary root", code="invalid", field="store")
    assert error_response(exc.value) == (400, "invalid", "source.store")
    # Anything else the agent says stays an upstream failure.
    with pytest.raises(AgentRequestError) as other, agent_refusals("source"):
        raise AgentRequestError("qemu-img failed", code="internal")
    assert error_response(other.value)[0] == 502
