"""Login, logout and "who am I". Login is the only data-free route besides health open to anyone."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.security import HTTPAuthorizationCredentials

from medsight.serve.deps import ClientDep, SettingsDep, StoreDep, bearer_scheme, public, requires
from medsight.serve.schemas import ErrorResponse, LoginRequest, TokenResponse, UserOut
from medsight.store import User, authenticate, create_token, revoke_token
from medsight.store.models import utcnow

router = APIRouter(prefix="/api/auth", tags=["auth"])
Anyone = Annotated[User, requires("tokens:own")]
# 403: a role without tokens:own, or a session cookie without its CSRF header (web.session_cookie_user)
_SIGNED_IN_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (401, 403)}


@router.post(
    "/login",
    dependencies=[Depends(public)],
    responses={401: {"model": ErrorResponse}, 422: {"model": ErrorResponse}},
)
def login(body: LoginRequest, store: StoreDep, settings: SettingsDep, client: ClientDep) -> TokenResponse:
    """Exchange a user name and password for an API token (audited, success or not, with the address)."""
    user = authenticate(store, body.username, body.password, client)
    # Taken before the token is made: the expiry reported is never later than the real one.
    expires_at = utcnow() + dt.timedelta(days=settings.login_token_days)
    token = create_token(store, user.name, "login", settings.login_token_days, by=user.name, client=client)
    return TokenResponse(token=token, expires_at=expires_at, user=user.name, role=user.role)


@router.post("/logout", status_code=204, responses=_SIGNED_IN_ERRORS)
def logout(
    store: StoreDep,
    user: Anyone,
    client: ClientDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> None:
    """Revoke the token this request was made with (a session cookie is ended by the web UI's own hook)."""
    if credentials is not None:
        revoke_token(store, credentials.credentials, by=user.name, client=client)


@router.get("/me", responses=_SIGNED_IN_ERRORS)
def me(user: Anyone) -> UserOut:
    """The caller's name and role (what the web UI shows and decides its menus by)."""
    return UserOut(name=user.name, role=user.role, active=user.active)
