"""The web UI's login: a session cookie instead of a bearer token (see ``medsight.serve.web``).

``POST /api/auth/session`` checks the password (failures audited by ``authenticate``), stores a short-lived
token named "browser session" and sets it as an HttpOnly cookie; the answer carries the CSRF token the
page must send back. ``GET /api/auth/session/csrf`` gives it again after a reload (a cross-site page
cannot read the answer: no CORS). ``POST /api/auth/session/logout`` revokes the session.
"""

from __future__ import annotations

import datetime as dt
from contextlib import suppress
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from medsight.serve.deps import ClientDep, StoreDep, public, requires
from medsight.serve.schemas import ErrorResponse, LoginRequest
from medsight.serve.web import (
    SESSION_COOKIE,
    SESSION_DAYS,
    SESSION_NAME,
    clear_session_cookie,
    csrf_token,
    set_session_cookie,
)
from medsight.store import NotFoundError, User, authenticate, create_token, revoke_token
from medsight.store.models import utcnow
from medsight.store.users import Role

router = APIRouter(prefix="/api/auth/session", tags=["auth"])
Anyone = Annotated[User, requires("tokens:own")]
_ERRORS = {code: {"model": ErrorResponse} for code in (401, 403, 422)}


class SessionResponse(BaseModel):
    user: str
    role: Role
    csrf_token: str | None = Field(
        description="send as the X-CSRF-Token header on every non-GET request (null: not a cookie session)"
    )
    expires_at: dt.datetime | None = None


@router.post("", dependencies=[Depends(public)], responses=_ERRORS)
def start_session(
    body: LoginRequest, request: Request, response: Response, store: StoreDep, client: ClientDep
) -> SessionResponse:
    """Log in from the browser: sets the session cookie, answers the CSRF token."""
    user = authenticate(store, body.username, body.password, client)
    expires_at = utcnow() + dt.timedelta(days=SESSION_DAYS)  # taken first: never later than the real one
    token = create_token(store, user.name, SESSION_NAME, SESSION_DAYS, by=user.name, client=client)
    set_session_cookie(request, response, token)
    return SessionResponse(
        user=user.name, role=user.role, csrf_token=csrf_token(request.app, token), expires_at=expires_at
    )


@router.get("/csrf", responses=_ERRORS)
def session_csrf(request: Request, user: Anyone) -> SessionResponse:
    """Who is logged in and the session's CSRF token (the page asks after a reload)."""
    session = request.cookies.get(SESSION_COOKIE)
    return SessionResponse(
        user=user.name, role=user.role, csrf_token=csrf_token(request.app, session) if session else None
    )


@router.post("/logout", status_code=204, responses=_ERRORS)
def end_session(
    request: Request, response: Response, store: StoreDep, user: Anyone, client: ClientDep
) -> None:
    """Revoke the session's token and clear the cookie (the CSRF check keeps other sites from doing it)."""
    session = request.cookies.get(SESSION_COOKIE)
    if session:
        with suppress(NotFoundError):  # already gone: logging out twice is fine
            revoke_token(store, session, by=user.name, client=client)
    clear_session_cookie(response)
