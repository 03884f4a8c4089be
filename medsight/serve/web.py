"""The browser's door: a session cookie with a CSRF token, and the web UI's static files.

A browser login (``POST /api/auth/session``) makes an ordinary API token named "browser session" with a
short life and puts it in an HttpOnly, SameSite=Strict cookie: the page's scripts never see it, so a
script injected into the page cannot carry it away. The page gets instead a CSRF token, an HMAC of the
session token under a site key, and sends it back as ``X-CSRF-Token`` on every request that changes
something. A cross-site form can make the browser send the cookie, but it cannot read or forge the CSRF
token, so the cookie alone only ever authorises safe (GET/HEAD) requests.
"""

from __future__ import annotations

import hashlib
import hmac
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from medsight.keys import load_or_create_key
from medsight.serve.deps import client_address
from medsight.serve.errors import HttpError
from medsight.store import Store, User, authenticate_token

SESSION_COOKIE = "medsight_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_NAME = "browser session"
SESSION_DAYS = 8 / 24  # a working shift; a forgotten tab does not stay logged in for days
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
STATIC_DIR = Path(str(files("medsight.serve") / "static"))
# The page loads only its own files: an injected <script src=elsewhere> or inline script does not run.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def csrf_token(app: FastAPI, session_token: str) -> str:
    """The CSRF token bound to one session: unguessable without the site key, dead with the session."""
    return hmac.new(app.state.csrf_key, session_token.encode(), hashlib.sha256).hexdigest()


def session_cookie_user(request: Request, store: Store) -> User | None:
    """The authenticator for ``app.state.authenticators``: the session cookie's user, CSRF checked."""
    session = request.cookies.get(SESSION_COOKIE)
    if not session:
        return None
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), csrf_token(request.app, session).encode()):
            # 403, not 401: the caller is known, the request just did not come from our page.
            raise HttpError(
                403, f"missing or wrong {CSRF_HEADER} header for this session; reload the page and retry."
            )
    return authenticate_token(store, session, client_address(request))


def set_session_cookie(request: Request, response: Response, session_token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        session_token,
        max_age=int(SESSION_DAYS * 86400),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",  # plain http on loopback must still work for a laptop demo
    )


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")


async def index(request: Request) -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=PAGE_HEADERS)


def install_web_ui(app: FastAPI) -> None:
    """Session cookies for every route, the page at ``/`` and its files at ``/static`` (no auth: no data)."""
    app.state.csrf_key = load_or_create_key("session", "MEDSIGHT_SESSION_KEY")
    app.state.authenticators.append(session_cookie_user)
    app.add_route("/", index, methods=["GET"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
