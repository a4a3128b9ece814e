"""Fuzz every operation of the live service from its own OpenAPI document (schemathesis).

Valid and invalid requests alike must never get a 5xx: bad input is a 4xx naming the field,
and the answers must match the document (statuses, content type, response schemas). The
document is narrowed in one way only, so that generated requests reach the driver instead of
stopping at "unknown pool": pool references are drawn from the stack's pools (plus one unknown
name), and secondary-storage locations from the stack's own secondary directory, so that no
fuzzed request makes an agent reach outside this machine. Jobs started by the fuzzing are
checked afterwards: none may have failed with an internal error.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cloudstack_storpool.service import ServiceServer
from integration.stack import LocalStack

pytestmark = pytest.mark.root

MAX_EXAMPLES = 30
POOL_FIELDS = ("pool", "source_pool", "target_pool")
FUZZ_POOL = "fuzz-pool"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _request_refs(doc: dict[str, Any]) -> set[str]:
    """Component schemas reachable from request bodies (narrowing one only used in responses
    would make the service's correct answers look wrong)."""
    refs: set[str] = set()

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                name = ref.rsplit("/", 1)[1]
                if name not in refs:
                    refs.add(name)
                    collect(doc["components"]["schemas"][name])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    for item in doc["paths"].values():
        for op in item.values():
            if isinstance(op, dict):
                collect(op.get("requestBody"))
                collect(op.get("parameters"))
    return refs


def _narrow(doc: dict[str, Any], pools: list[str], store: str, url: str) -> dict[str, Any]:
    doc = copy.deepcopy(doc)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            props = node.get("properties")
            if isinstance(props, dict):
                for name in POOL_FIELDS:
                    if name in props:
                        props[name] = {"enum": pools}
                if "store" in props:
                    props["store"] = {"enum": [store]}
                if "url" in props:
                    props["url"] = {"enum": [url, "SP_API_HTTP=127.0.0.1:1;SP_AUTH_TOKEN=x;SP_TEMPLATE=nvme"]}
                    props["name"] = {"enum": [FUZZ_POOL]}
            if node.get("in") in ("path", "query") and node.get("name") in POOL_FIELDS:
                node["schema"] = {"enum": pools}
            for key, value in node.items():
                if key == "responses":
                    continue
                if key == "delete" and isinstance(value, dict) and value.get("operationId") == "remove_pool":
                    # Removing the stack's (empty) pools would be legitimate, and would leave every
                    # later operation nothing but "unknown pool": only the fuzz-made pool may go.
                    for param in value.get("parameters", []):
                        param["schema"] = {"enum": [FUZZ_POOL, "no-such-pool"]}
                    continue
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc["paths"])
    schemas = doc.get("components", {}).get("schemas", {})
    for name in _request_refs(doc):
        walk(schemas[name])
    return doc


def _fuzz(strategy: st.SearchStrategy[Any], label: str, url: str, session: requests.Session,
          statuses: Counter[tuple[str, int]]) -> None:
    @given(case=strategy)
    @settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def check(case: Any) -> None:
        response = case.call(base_url=url, session=session, timeout=60)
        statuses[(label, response.status_code)] += 1
        case.validate_response(response, checks=CHECKS)

    check()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_fuzzing_the_openapi_finds_no_server_errors(stack: LocalStack, service: ServiceServer, service_token: str,
                                                    mode: GenerationMode) -> None:
    headers = {"Authorization": f"Bearer {service_token}"}
    doc = requests.get(service.url + "/openapi.json", headers=headers, timeout=10).json()
    pools = [p.name for p in stack.pools().pools] + [p.uuid for p in stack.pools().pools] + ["no-such-pool"]
    # A pool URL the stack can really register (its `nvme` template is not used by any pool).
    doc = _narrow(doc, pools, str(stack.secondary), stack.sp.pool_url("nvme"))
    schema = schemathesis.openapi.from_dict(doc)
    session = requests.Session()
    session.headers.update(headers)
    tested: list[str] = []
    statuses: Counter[tuple[str, int]] = Counter()
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the service's own document is invalid: {result.err()}"
        operation = result.ok()
        tested.append(operation.label)
        _fuzz(operation.as_strategy(generation_mode=mode), operation.label, service.url, session, statuses)
    assert len(tested) == sum(len(m) for m in doc["paths"].values())
    # The fuzzing went past the front door: every operation was called, and in positive mode a
    # good share of the operations answered with success somewhere.
    called = {label for label, _ in statuses}
    assert called == set(tested)
    if mode is GenerationMode.POSITIVE:
        succeeded = {label for label, status in statuses if status < 300}
        assert len(succeeded) >= len(tested) // 3, sorted(succeeded)

    # Jobs the fuzzing started run on; wait for them and look at how they ended.
    deadline = time.monotonic() + 300
    while any(j.state in ("queued", "running") for j in service.jobs.list()) and time.monotonic() < deadline:
        time.sleep(0.2)
    jobs = service.jobs.list()
    assert all(j.state in ("succeeded", "failed") for j in jobs), [j.to_json() for j in jobs if j.finished is None]
    internal = [j.to_json() for j in jobs if j.error and j.error["status"] == 500]
    assert not internal, internal[:3]
