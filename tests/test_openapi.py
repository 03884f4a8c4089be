"""The OpenAPI schema is the API's contract: valid OpenAPI 3 (checked by openapi-spec-validator), and
complete: every operation says what it does, what it answers (the error shape too), what it takes and
how a caller authenticates; and the answers the app really sends match what it documents."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from medsight.serve import create_app
from medsight.serve.deps import api_routes, route_access
from medsight.store import Store

ERROR_REF = "#/components/schemas/ErrorResponse"
WRITE_METHODS = {"post", "put", "patch"}
# Actions whose target is in the URL and that take no body.
BODYLESS = {
    ("post", "/api/auth/logout"),
    ("post", "/api/auth/session/logout"),
    ("post", "/api/admin/instances/{sop_instance_uid}/clear-flag"),
}


@pytest.fixture
def app(store: Store) -> FastAPI:
    return create_app(store)


@pytest.fixture
def schema(app: FastAPI) -> dict[str, Any]:
    return app.openapi()


def operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in schema["paths"].items():
        for method, op in item.items():
            yield method, path, op


def resolve(schema: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref}: only local references are expected"
    node: Any = schema
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
        node = node[part]
    return node


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def test_schema_is_valid_openapi(schema: dict[str, Any]) -> None:
    assert schema["openapi"].startswith("3.")
    validate(schema)  # raises with the offending path when anything breaks the OpenAPI 3 spec
    for ref in set(refs(schema)):  # the validator does not follow every $ref inside embedded schemas
        resolve(schema, ref)
    ids = [op["operationId"] for _, _, op in operations(schema)]
    assert len(ids) == len(set(ids)), "operationIds must be unique"


def operation_problems(method: str, path: str, op: dict[str, Any]) -> Iterator[str]:
    where = f"{method.upper()} {path}"
    if not (op.get("summary") and op.get("description")):
        yield f"{where}: no summary or description (give the handler a docstring)"
    successes = {code: r for code, r in op["responses"].items() if code.startswith("2")}
    if not successes:
        yield f"{where}: no success response documented"
    for code, response in successes.items():
        if code != "204" and not any(m.get("schema") for m in response.get("content", {}).values()):
            yield f"{where}: the {code} answer has no schema"
    for code, response in op["responses"].items():
        shown = response.get("content", {}).get("application/json", {}).get("schema")
        if code.startswith("4") and shown is not None and shown != {"$ref": ERROR_REF}:
            yield f"{where}: {code} is not the error shape the app sends"
    if (op.get("parameters") or op.get("requestBody")) and not {"400", "422"} & set(op["responses"]):
        yield f"{where}: takes input but documents no refusal of it (400 or 422)"
    if method in WRITE_METHODS and (method, path) not in BODYLESS:
        body = op.get("requestBody", {}).get("content", {})
        if not body or not all(m.get("schema") for m in body.values()):
            yield f"{where}: its request body is not documented"


def test_every_operation_is_described_and_answers_documented(schema: dict[str, Any]) -> None:
    problems = [p for method, path, op in operations(schema) for p in operation_problems(method, path, op)]
    assert not problems, "\n".join(problems)
    assert "HTTPValidationError" not in schema["components"]["schemas"]


def test_security_is_declared_on_every_protected_route(app: FastAPI, schema: dict[str, Any]) -> None:
    schemes = schema["components"]["securitySchemes"]
    assert schemes["HTTPBearer"]["scheme"] == "bearer"
    assert schemes["SessionCookie"] == schemes["SessionCookie"] | {"type": "apiKey", "in": "cookie"}
    routes = [(m.lower(), r.path, route_access(r.dependant)) for r in api_routes(app) for m in r.methods]
    documented = {(method, path) for method, path, _ in operations(schema)}
    assert {(m, p) for m, p, _ in routes} == documented, "every API route is in the schema, nothing else"
    for method, path, access in routes:
        op = schema["paths"][path][method]
        if access == "public":
            assert not op.get("security"), f"{method} {path} is public"
            continue
        assert {"HTTPBearer": []} in op["security"] and {"SessionCookie": []} in op["security"], path
        assert {"401", "403"} <= set(op["responses"]), f"{method.upper()} {path}: document 401 and 403"


def _schema_of(schema: dict[str, Any], path: str, method: str, code: str) -> Draft202012Validator:
    content = schema["paths"][path][method]["responses"][code]["content"]["application/json"]["schema"]
    return Draft202012Validator({**content, "components": schema["components"]})


def test_answers_match_the_documented_shapes(app: FastAPI, schema: dict[str, Any]) -> None:
    client = TestClient(app)
    answers = {
        ("/api/auth/login", "post", "422"): client.post("/api/auth/login", json={"username": ""}),
        ("/api/auth/me", "get", "401"): client.get("/api/auth/me"),
        ("/api/health", "get", "200"): client.get("/api/health"),
        ("/api/admin/audit", "get", "401"): client.get("/api/admin/audit", params={"limit": "x"}),
    }
    for (path, method, code), response in answers.items():
        assert response.status_code == int(code), (path, response.text)
        _schema_of(schema, path, method, code).validate(response.json())
