"""Dependencies every route uses: the store, the caller's address, who the caller is, what they may do.

Who the caller is: an ``Authorization: Bearer TOKEN`` header first; otherwise each callable in
``app.state.authenticators`` is asked in turn. That list is the hook for the web UI's session
cookie (issue 4): append ``(request, store) -> User | None`` there, and every route accepts it with
no change. (A cookie authenticator must also check CSRF on unsafe methods: a browser sends cookies
on cross-site requests, while it never adds a bearer header by itself.)

What they may do: ``requires(permission)`` checks the role against ``medsight.store.users.PERMISSIONS``
and records the permission on the dependency, where ``route_access`` reads it back; the route-table
test walks every route that way, so a new route without a declared permission fails it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from medsight.serve.settings import ServeSettings
from medsight.store import PERMISSIONS, Store, User, audit, authenticate_token, require
from medsight.store.errors import AuthenticationError, PermissionDeniedError

Authenticator = Callable[[Request, Store], User | None]
PERMISSION_ATTR = "medsight_permission"
PUBLIC_ATTR = "medsight_public"

# auto_error=False: a missing header must reach current_user, which may try a session cookie instead.
bearer_scheme = HTTPBearer(
    auto_error=False, description="an API token: `medsight token create USER` or login"
)


# The dependencies that only read the request are coroutines: FastAPI runs a plain function
# dependency on a worker thread, and the hop costs more than the work on every request.
async def get_store(request: Request) -> Store:
    return request.app.state.store


async def get_settings(request: Request) -> ServeSettings:
    return request.app.state.settings


def client_address(request: Request) -> str | None:
    """The peer's address as the server sees it (behind a proxy: the proxy's, unless uvicorn is told)."""
    return request.client.host if request.client else None


async def _client_dependency(request: Request) -> str | None:
    return client_address(request)


StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[ServeSettings, Depends(get_settings)]
ClientDep = Annotated[str | None, Depends(_client_dependency)]


def current_user(
    request: Request,
    store: StoreDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> User:
    """The authenticated caller; AuthenticationError (401) saying why when there is none."""
    client = client_address(request)
    user: User | None = None
    if credentials is not None:
        user = authenticate_token(store, credentials.credentials, client)
    else:
        for authenticate in request.app.state.authenticators:
            if (user := authenticate(request, store)) is not None:
                break
    if user is None:
        raise AuthenticationError(
            "authentication required: send 'Authorization: Bearer TOKEN' "
            "(POST /api/auth/login or `medsight token create USER` gives one)."
        )
    request.state.user = user
    return user


def requires(permission: str) -> Any:
    """A dependency (use as a parameter default or in ``dependencies=[...]``) giving the caller if allowed."""
    if permission not in PERMISSIONS:  # a typo fails when the router module is imported, not at request time
        raise KeyError(f"unknown permission {permission!r}; known: {', '.join(PERMISSIONS)}")

    def check(request: Request, store: StoreDep, user: Annotated[User, Depends(current_user)]) -> User:
        try:
            require(user, permission)
        except PermissionDeniedError:
            # Refusals are what an admin reviews. The route's template, not its URL: a URL may hold
            # an original UID a client sent (STOW-RS into a study named by its original UID).
            route = f"{request.method} {getattr(request.scope.get('route'), 'path', '?')}"
            audit.record(store, "access", "route", route, user, client_address(request), outcome="denied")
            raise
        return user

    setattr(check, PERMISSION_ATTR, permission)
    check.__name__ = f"requires_{permission.replace(':', '_').replace('-', '_')}"
    return Depends(check)


def public() -> None:
    """Marks a route that answers without authentication (only health and login)."""


setattr(public, PUBLIC_ATTR, True)


@dataclass(frozen=True)
class ApiRouteInfo:
    path: str  # as served, router prefixes included
    methods: frozenset[str]
    dependant: Dependant  # include-time dependencies included


def api_routes(app: FastAPI) -> list[ApiRouteInfo]:
    """Every API route of the app as it is served, whichever way this FastAPI version keeps included routers."""
    try:  # FastAPI >= 0.16x resolves included routers lazily; app.routes then holds only their handles
        from fastapi.routing import iter_route_contexts
    except ImportError:
        return [
            ApiRouteInfo(r.path, frozenset(r.methods), r.dependant)
            for r in app.routes
            if isinstance(r, APIRoute)
        ]
    return [
        ApiRouteInfo(ctx.path, frozenset(ctx.methods or ()), ctx.dependant)
        for ctx in iter_route_contexts(app.routes)
        if isinstance(ctx.original_route, APIRoute)
    ]


def _calls(dependant: Dependant) -> list[Callable[..., Any]]:
    found = []
    for sub in dependant.dependencies:
        if sub.call is not None:
            found.append(sub.call)
        found.extend(_calls(sub))
    return found


def route_access(dependant: Dependant) -> str | None:
    """The permission a route declares, ``"public"``, or None when it declares neither (a bug)."""
    calls = _calls(dependant)
    permissions = {getattr(call, PERMISSION_ATTR) for call in calls if hasattr(call, PERMISSION_ATTR)}
    is_public = any(getattr(call, PUBLIC_ATTR, False) for call in calls)
    if len(permissions) > 1 or (permissions and is_public):
        return None  # ambiguous: which one protects the route? Declare exactly one.
    return "public" if is_public else next(iter(permissions), None)
