"""The OpenAPI 3.1 document of the driver service, generated from the operation table.

The service serves it at `GET /openapi.json`; `docs/openapi.json` is the same document,
written by `python -m cloudstack_storpool.service.openapi > docs/openapi.json` and compared with
the served one by a test, so the checked-in reference cannot fall behind the code.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from cloudstack_storpool.service.jobs import JOB_ID_PATTERN, MAX_KEY
from cloudstack_storpool.service.schema import SchemaBuilder, describe
from cloudstack_storpool.service.spec import IDEMPOTENCY_FIELD, Operation, OperationTable
from cloudstack_storpool.version import __version__

ERROR_STATUSES = {
    "400": "Invalid request; `field` names what was wrong",
    "401": "Missing or wrong bearer token (the body was not read)",
    "404": "The route, or an object the request names, does not exist",
    "409": "Conflict with the current state (object exists, busy, in use, idempotency key reused)",
    "500": "Internal error; the message carries a reference to the service log",
    "502": "StorPool, CloudStack or a KVM host agent answered with an error",
    "503": "StorPool or CloudStack did not answer, or StorPool answered a transient error; retry later "
           "(Retry-After)",
}

_ERROR_OBJECT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "code": {"type": "string", "description": "Stable machine-readable code (invalid, not-found, busy, ...)"},
        "message": {"type": "string"},
        "field": {"type": "string", "description": "The request field that was wrong (400 only)"},
    },
    "required": ["code", "message"],
}

_JOB_STATES = ["queued", "running", "succeeded", "failed"]


def _pascal(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[_\-]", name) if part)


def _job_schema(result: dict[str, Any], description: str) -> dict[str, Any]:
    job_error = {**_ERROR_OBJECT, "properties": {
        **_ERROR_OBJECT["properties"],
        "status": {"type": "integer", "description": "The HTTP status the operation would have had if run synchronously"},
    }}
    nullable_result = {"anyOf": [result, {"type": "null"}]} if result else {}
    return {
        "type": "object",
        "description": description,
        "properties": {
            "id": {"type": "string", "pattern": JOB_ID_PATTERN},
            "operation": {"type": "string"},
            "idempotency_key": {"type": ["string", "null"]},
            "state": {"enum": _JOB_STATES},
            "progress": {"type": ["number", "null"], "minimum": 0, "maximum": 100,
                         "description": "Percent done of the agent copy the job waits for; null when it copies nothing"},
            "result": nullable_result,
            "error": {"anyOf": [job_error, {"type": "null"}]},
            "created": {"type": "number"},
            "started": {"type": ["number", "null"]},
            "finished": {"type": ["number", "null"]},
        },
        "required": ["id", "operation", "idempotency_key", "state", "progress", "result", "error", "created",
                     "started", "finished"],
    }


def _errors(*statuses: str) -> dict[str, Any]:
    return {s: {"$ref": f"#/components/responses/Error{s}"} for s in statuses}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _operation(op: Operation, builder: SchemaBuilder, schemas: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"operationId": op.name, "summary": op.summary, "tags": [op.tag]}
    description = op.description
    if op.job:
        description = (description + "\n\n" if description else "") + (
            "Runs as a job: answers 202 with the job (200 with the existing job when the idempotency key "
            "is known); poll `GET /v1/jobs/{job_id}` on the same service process.")
    if description:
        out["description"] = description
    parameters: list[dict[str, Any]] = []
    for p in op.params:
        if p.location == "body":
            continue
        param: dict[str, Any] = {"name": p.name, "in": p.location, "required": p.required,
                                 "schema": builder.schema(p.type, p.name)}
        parameters.append(param)
    if op.job:
        parameters.append({"name": "Idempotency-Key", "in": "header", "required": False,
                           "description": "Returns the existing job for a repeated request (or use the "
                                          "`idempotency_key` body field).",
                           "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY,
                                      "pattern": r"^[\x21-\x7e][\x20-\x7e]*$"}})
    if parameters:
        out["parameters"] = parameters
    if op.accepts_body and (op.body_params or op.job):
        body = builder.object_schema(op.body_fields)
        if op.job:
            body["properties"][IDEMPOTENCY_FIELD] = {"type": "string", "minLength": 1, "maxLength": MAX_KEY}
        out["requestBody"] = {"required": bool(body.get("required")),
                              "content": {"application/json": {"schema": body}}}
    result = builder.schema(op.result_type, "return") if op.result_type is not None else {}
    responses: dict[str, Any] = {}
    if op.job:
        job_name = f"{_pascal(op.name)}Job"
        schemas[job_name] = _job_schema(result, f"A job of {op.name}; `result` is its answer once succeeded.")
        ref = {"$ref": f"#/components/schemas/{job_name}"}
        responses["200"] = _json(ref, "The existing job for this idempotency key")
        responses["202"] = _json(ref, "The job was started")
    elif op.result_type is None:
        responses["204"] = {"description": "Done"}
    else:
        responses["200"] = _json(result, describe(op.result_type) if isinstance(op.result_type, type) else "Done")
        if not responses["200"]["description"]:
            responses["200"]["description"] = "Done"
    responses.update(_errors("400", "401", "404", "409", "500", "502", "503"))
    out["responses"] = responses
    return out


def document(table: OperationTable) -> dict[str, Any]:
    builder = SchemaBuilder()
    schemas: dict[str, Any] = {
        "Error": {"type": "object", "properties": {"error": _ERROR_OBJECT}, "required": ["error"]},
        "Job": _job_schema({}, "A background operation of this service process."),
        "JobList": {"type": "object", "properties": {"jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}}},
                    "required": ["jobs"]},
        "Health": {"type": "object", "required": ["status", "version", "pools"], "properties": {
            "status": {"const": "ok"},
            "version": {"type": "string"},
            "pools": {"type": "array", "items": {"type": "object", "required": ["uuid", "name", "endpoint", "template"],
                                                 "properties": {k: {"type": "string"} for k in
                                                                ("uuid", "name", "endpoint", "template")}}},
        }},
    }
    paths: dict[str, dict[str, Any]] = {
        "/openapi.json": {"get": {"operationId": "openapi", "summary": "This document", "tags": ["service"],
                                  "responses": {"200": _json({"type": "object"}, "The OpenAPI document"),
                                                **_errors("401")}}},
        "/v1/health": {"get": {"operationId": "health", "summary": "Liveness, version and configured pools",
                               "tags": ["service"],
                               "responses": {"200": _json({"$ref": "#/components/schemas/Health"}, "Alive"),
                                             **_errors("401")}}},
        "/v1/jobs": {"get": {"operationId": "list_jobs", "summary": "Jobs known to this service process",
                             "tags": ["jobs"],
                             "responses": {"200": _json({"$ref": "#/components/schemas/JobList"}, "Jobs"),
                                           **_errors("401")}}},
        "/v1/jobs/{job_id}": {"get": {
            "operationId": "get_job", "summary": "One job: state, and result or error once finished",
            "description": "Job ids are valid only on the service process that issued them.",
            "tags": ["jobs"],
            "parameters": [{"name": "job_id", "in": "path", "required": True,
                            "schema": {"type": "string", "pattern": JOB_ID_PATTERN}}],
            "responses": {"200": _json({"$ref": "#/components/schemas/Job"}, "The job"),
                          **_errors("400", "401", "404")}}},
    }
    for op in table.operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, builder, schemas)
    schemas.update(builder.components)
    responses = {f"Error{s}": _json({"$ref": "#/components/schemas/Error"}, d) for s, d in ERROR_STATUSES.items()}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "cloudstack-storpool driver service",
            "version": __version__,
            "description": "Every StorPool primary-storage driver operation for a CloudStack management "
                           "server. Bearer-token authentication on every route; long operations run as jobs. "
                           "See docs/service.md.",
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": dict(sorted(schemas.items())),
            "responses": responses,
        },
    }


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2) + "\n"


def main() -> None:
    from cloudstack_storpool.service.operations import TABLE

    sys.stdout.write(dumps(document(TABLE)))


if __name__ == "__main__":
    main()
