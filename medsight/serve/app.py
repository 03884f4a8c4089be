"""The FastAPI app: ``create_app()`` builds it; ``medsight serve`` runs it with uvicorn.

Routers per resource (``routers/``), pydantic models for JSON bodies (``schemas.py``), auth as
dependencies (``deps.py``), MedsightError -> 4xx JSON (``errors.py``). The web UI (issue 4) adds its
routers and static files here, and its session cookie through ``app.state.authenticators``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from medsight import __version__
from medsight.serve.deps import Authenticator, api_routes, route_access
from medsight.serve.errors import install_error_handlers
from medsight.serve.openapi import install_openapi
from medsight.serve.routers import (
    admin,
    auth,
    dicomweb,
    health,
    models,
    predict,
    preview,
    results,
    session,
    stow,
)
from medsight.serve.settings import ServeSettings
from medsight.serve.web import install_web_ui
from medsight.store import Store, open_store

ROUTERS = (
    health.router,
    auth.router,
    session.router,
    admin.router,
    dicomweb.router,
    stow.router,
    predict.router,
    preview.router,
    results.router,
    models.router,
)


def check_route_access(app: FastAPI) -> None:
    """Refuse to build an app with a route that declares neither a permission nor ``public``."""
    undeclared = [
        f"{sorted(route.methods)} {route.path}"
        for route in api_routes(app)
        if route_access(route.dependant) is None
    ]
    if undeclared:
        raise RuntimeError(
            "routes without exactly one access rule (deps.requires(permission) or deps.public): "
            + ", ".join(undeclared)
        )


def create_app(store: Store | None = None, settings: ServeSettings | None = None) -> FastAPI:
    """The app over ``store`` (default: ``open_store()`` from the environment, closed on shutdown)."""
    owns_store = store is None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if owns_store:
            app.state.store.close()

    app = FastAPI(
        title="medsight",
        version=__version__,
        description="Deep learning on medical images: studies, DICOMweb, models and predictions.",
        lifespan=lifespan,
    )
    app.state.store = store if store is not None else open_store()
    app.state.settings = settings or ServeSettings()
    app.state.authenticators: list[Authenticator] = []
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    check_route_access(app)
    install_web_ui(app)  # after the check: the page and its files hold no data
    install_openapi(app)
    return app
