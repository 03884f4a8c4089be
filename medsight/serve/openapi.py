"""The OpenAPI schema as a client must read it: FastAPI's own, plus what FastAPI cannot see by itself.

- Every refusal is ``{"error": message}`` (``errors.install_error_handlers``), a 422 too; FastAPI
  documents its own validation shape (``HTTPValidationError``), which this app never sends.
- The web UI's session cookie authenticates every protected route as well as a bearer token does
  (``web.session_cookie_user``, an authenticator FastAPI does not know about).
- Schemas written by hand into ``responses``/``openapi_extra`` (DICOM JSON, multipart bodies) carry
  pydantic's local ``$defs``; in an OpenAPI document ``#/$defs/...`` would point at the document's
  root, so those definitions move to ``components/schemas``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from medsight.serve.web import CSRF_HEADER, SESSION_COOKIE

ERROR_SCHEMA = "ErrorResponse"
FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")
BEARER = "HTTPBearer"  # FastAPI names the scheme after its class (deps.bearer_scheme)
SESSION = "SessionCookie"
SESSION_SCHEME = {
    "type": "apiKey",
    "in": "cookie",
    "name": SESSION_COOKIE,
    "description": (
        f"the web UI's login (POST /api/auth/session); requests other than GET/HEAD must also send "
        f"the session's CSRF token as the {CSRF_HEADER} header."
    ),
}
COMPONENT_REF = "#/components/schemas/"


def _operations(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return [op for item in schema.get("paths", {}).values() for op in item.values() if isinstance(op, dict)]


def _errors_as_sent(schema: dict[str, Any]) -> None:
    """Every documented validation refusal points at the error shape the app really answers with."""
    for op in _operations(schema):
        for response in op.get("responses", {}).values():
            for media in response.get("content", {}).values():
                if media.get("schema", {}).get("$ref") == COMPONENT_REF + FASTAPI_VALIDATION[0]:
                    media["schema"] = {"$ref": COMPONENT_REF + ERROR_SCHEMA}
                    response["description"] = "the request's fields are invalid: what was wrong"
    components = schema.get("components", {}).get("schemas", {})
    for name in FASTAPI_VALIDATION:
        components.pop(name, None)


def _session_cookie(schema: dict[str, Any]) -> None:
    """Wherever a bearer token is accepted, the session cookie is an alternative to it."""
    schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes[SESSION] = SESSION_SCHEME
    for op in _operations(schema):
        security = op.get("security", [])
        if any(BEARER in requirement for requirement in security) and {SESSION: []} not in security:
            security.append({SESSION: []})


def _hoist_local_defs(node: Any, components: dict[str, Any]) -> None:
    """Move ``$defs`` found anywhere under ``node`` into ``components`` and repoint their ``$ref``s."""
    if isinstance(node, list):
        for item in node:
            _hoist_local_defs(item, components)
        return
    if not isinstance(node, dict):
        return
    for name, definition in node.pop("$defs", {}).items():
        components.setdefault(name, definition)
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        node["$ref"] = COMPONENT_REF + ref.removeprefix("#/$defs/")
    for value in list(node.values()):  # a copy: hoisting may add to ``components`` while it is walked
        _hoist_local_defs(value, components)


def complete_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Apply the three corrections above to FastAPI's schema, in place."""
    _errors_as_sent(schema)
    _session_cookie(schema)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    _hoist_local_defs(schema.get("paths", {}), components)
    _hoist_local_defs(components, components)
    return schema


def install_openapi(app: FastAPI) -> None:
    """``app.openapi()`` (and /openapi.json, /docs) answer the completed schema, built once."""
    fastapi_openapi: Callable[[], dict[str, Any]] = app.openapi
    completed: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        if not completed:
            completed.append(complete_schema(fastapi_openapi()))
        return completed[0]

    app.openapi = openapi  # type: ignore[method-assign]
