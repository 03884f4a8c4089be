"""The API's doors: every route needs a token and the right role (proved by walking the route table),
tokens that expired or were revoked are refused with a reason, logins are audited, OpenAPI builds.
"""

from __future__ import annotations

import datetime as dt
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import update

from medsight.serve import create_app
from medsight.serve.app import check_route_access
from medsight.serve.deps import api_routes, route_access
from medsight.store import (
    PERMISSIONS,
    Role,
    Store,
    add_user,
    create_token,
    list_tokens,
    open_store,
    revoke_token,
)
from medsight.store.audit import query as audit_query
from medsight.store.models import ApiToken

PASSWORD = "correct horse battery"
PUBLIC_PATHS = {"/api/health", "/api/auth/login", "/api/auth/session"}
# Non-API routes: FastAPI's own, and the web UI's page and static files (they hold no data).
FRAMEWORK_PATHS = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/", "/static"}


@pytest.fixture
def store() -> Iterator[Store]:
    with open_store() as store:
        yield store


@pytest.fixture
def app(store: Store) -> FastAPI:
    return create_app(store)


@pytest.fixture
def client(app: FastAPI) -> TestClient:
    return TestClient(app)


@pytest.fixture
def tokens(store: Store) -> dict[str, str]:
    """A user and a token for every role, keyed by role name."""
    found = {}
    for role in Role:
        add_user(store, f"{role.value}-user", role, PASSWORD)
        found[role.value] = create_token(store, f"{role.value}-user")
    return found


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _concrete(path: str) -> str:
    """A path with every {parameter} filled in (a UID-like value: valid for every route's type)."""
    return re.sub(r"\{[^}]+\}", "1.2.3", path)


def test_every_route_declares_exactly_one_access_rule(app: FastAPI) -> None:
    routes = api_routes(app)
    assert len(routes) > 20  # the walk sees the included routers, not just their handles
    for route in routes:
        access = route_access(route.dependant)
        assert access is not None, f"{route.path} declares no permission (deps.requires) and is not public"
        assert access == "public" or access in PERMISSIONS
        assert (access == "public") == (route.path in PUBLIC_PATHS), f"{route.path}: {access}"
    others = {getattr(r, "path", None) for r in app.routes if type(r).__name__ in ("Route", "Mount")}
    assert others <= FRAMEWORK_PATHS, f"routes outside the API's access rules: {others - FRAMEWORK_PATHS}"


def test_every_route_refuses_no_token_and_wrong_role(client: TestClient, tokens: dict[str, str]) -> None:
    failures, checked_403 = [], 0
    for route in api_routes(client.app):
        access = route_access(route.dependant)
        if access == "public":
            continue
        denied_roles = sorted(set(tokens) - PERMISSIONS[access])
        for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
            url = _concrete(route.path)
            response = client.request(method, url)
            if response.status_code != 401 or "error" not in response.json():
                failures.append(f"{method} {url} without token: {response.status_code} {response.text[:100]}")
            if response.headers.get("www-authenticate") != "Bearer":
                failures.append(f"{method} {url}: 401 without WWW-Authenticate: Bearer")
            for role in denied_roles:  # every role that lacks the permission, not just one
                response = client.request(method, url, headers=_bearer(tokens[role]))
                checked_403 += 1
                if response.status_code != 403 or access not in response.json().get("error", ""):
                    failures.append(f"{method} {url} as {role}: {response.status_code} {response.text[:100]}")
    assert not failures, "\n".join(failures)
    assert checked_403 > 20


def test_app_refuses_a_route_without_access_rule(app: FastAPI) -> None:
    app.add_api_route("/api/forgotten", lambda: {"oops": True}, methods=["GET"])
    with pytest.raises(RuntimeError, match="/api/forgotten"):
        check_route_access(app)


def _set_expiry(store: Store, token_id: int, when: dt.datetime) -> None:
    with store.write() as session:
        session.execute(update(ApiToken).where(ApiToken.id == token_id).values(expires_at=when))


def test_expired_revoked_unknown_and_malformed_tokens_say_why(
    client: TestClient, store: Store, tokens: dict[str, str]
) -> None:
    me = "/api/auth/me"
    assert client.get(me, headers=_bearer(tokens["viewer"])).json()["role"] == "viewer"

    expiring = create_token(store, "viewer-user", "short")
    (short,) = [t for t in list_tokens(store, "viewer-user") if t.name == "short"]
    _set_expiry(store, short.id, dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1))
    response = client.get(me, headers=_bearer(expiring))
    assert response.status_code == 401 and "expired" in response.json()["error"]

    revoke_token(store, tokens["clinician"])
    response = client.get(me, headers=_bearer(tokens["clinician"]))
    assert response.status_code == 401 and "revoked" in response.json()["error"]

    response = client.get(me, headers=_bearer("ms_" + "x" * 43))
    assert response.status_code == 401 and "unknown" in response.json()["error"]
    response = client.get(me, headers=_bearer("not-a-token"))
    assert response.status_code == 401 and "not a medsight API token" in response.json()["error"]
    response = client.get(me, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert response.status_code == 401 and "Bearer" in response.json()["error"]
    for text in (expiring, tokens["clinician"]):  # a refusal never repeats the token
        assert text not in response.text


def test_login_logout_and_their_audit(client: TestClient, store: Store) -> None:
    add_user(store, "dr-who", Role.CLINICIAN, PASSWORD)
    bad = client.post("/api/auth/login", json={"username": "dr-who", "password": "wrong password"})
    assert bad.status_code == 401 and bad.json() == {"error": "wrong user name or password."}
    unknown = client.post("/api/auth/login", json={"username": "nobody", "password": "wrong password"})
    assert unknown.json() == bad.json()  # no telling which user names exist

    good = client.post("/api/auth/login", json={"username": "dr-who", "password": PASSWORD})
    assert good.status_code == 200
    body = good.json()
    assert body["user"] == "dr-who" and body["role"] == "clinician" and body["token"].startswith("ms_")
    expires = dt.datetime.fromisoformat(body["expires_at"])
    assert dt.timedelta(hours=11) < expires - dt.datetime.now(dt.timezone.utc) <= dt.timedelta(hours=12)
    assert client.get("/api/auth/me", headers=_bearer(body["token"])).json()["name"] == "dr-who"

    failed = audit_query(store, action="login_failed")
    assert {(e.resource_id, e.client, e.outcome) for e in failed} == {
        ("dr-who", "testclient", "denied"),
        ("nobody", "testclient", "denied"),
    }
    assert PASSWORD not in str([e.detail for e in failed]) and "wrong password" not in str(failed)
    (login,) = audit_query(store, action="login")
    assert (login.user, login.client, login.outcome) == ("dr-who", "testclient", "ok")

    assert client.post("/api/auth/logout", headers=_bearer(body["token"])).status_code == 204
    after = client.get("/api/auth/me", headers=_bearer(body["token"]))
    assert after.status_code == 401 and "revoked" in after.json()["error"]


def test_bad_request_bodies_answer_json_errors(client: TestClient, tokens: dict[str, str]) -> None:
    response = client.post("/api/auth/login", json={"username": "x"})
    assert response.status_code == 422 and "password" in response.json()["error"]
    admin = _bearer(tokens["admin"])
    response = client.post(
        "/api/admin/users", json={"name": "x", "role": "wizard", "password": PASSWORD}, headers=admin
    )
    assert response.status_code == 422 and "role" in response.json()["error"]
    response = client.post(
        "/api/admin/users", json={"name": "admin-user", "role": "viewer", "password": PASSWORD}, headers=admin
    )
    assert response.status_code == 409 and "already exists" in response.json()["error"]
    response = client.patch("/api/admin/users/ghost", json={"active": False}, headers=admin)
    assert response.status_code == 404 and "ghost" in response.json()["error"]


def test_admin_manages_users_and_reads_audit(
    client: TestClient, store: Store, tokens: dict[str, str]
) -> None:
    admin = _bearer(tokens["admin"])
    created = client.post(
        "/api/admin/users", json={"name": "res2", "role": "researcher", "password": PASSWORD}, headers=admin
    )
    assert created.status_code == 201 and created.json() == {
        "name": "res2",
        "role": "researcher",
        "active": True,
    }
    names = {u["name"] for u in client.get("/api/admin/users", headers=admin).json()}
    assert {"res2", "admin-user", "viewer-user"} <= names
    disabled = client.patch("/api/admin/users/res2", json={"active": False}, headers=admin).json()
    assert disabled["active"] is False
    assert client.get("/api/admin/instances/flagged", headers=admin).json() == []

    denied = client.get("/api/admin/audit", headers=_bearer(tokens["researcher"]))
    assert denied.status_code == 403
    events = client.get("/api/admin/audit", params={"user": "researcher-user"}, headers=admin).json()
    assert any(
        e["action"] == "access" and e["outcome"] == "denied" and e["client"] == "testclient" for e in events
    )
    assert audit_query(store, user="admin-user", action="read")[0].resource_type == "audit"


def test_health_is_public_and_openapi_builds(client: TestClient, app: FastAPI) -> None:
    health = client.get("/api/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    schema = app.openapi()
    assert {"/api/auth/login", "/dicomweb/studies", "/dicomweb/studies/{study}/metadata"} <= set(
        schema["paths"]
    )
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert client.get("/openapi.json").status_code == 200


def test_medsight_serve_answers_health() -> None:
    """``medsight serve`` in a real process: health is open, data needs a token."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "medsight.cli", "serve", "--port", str(port), "--log-level", "warning"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline, health = time.monotonic() + 60, None
        while health is None:
            assert server.poll() is None, server.stderr.read().decode() if server.stderr else "exited"
            assert time.monotonic() < deadline, "medsight serve did not answer within 60 s"
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2)
            except httpx.TransportError:
                time.sleep(0.2)
        assert health.json()["status"] == "ok"
        assert httpx.get(f"http://127.0.0.1:{port}/dicomweb/studies", timeout=5).status_code == 401
    finally:
        server.terminate()
        server.wait(timeout=20)
