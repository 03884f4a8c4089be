"""``GET /api/health``: the one route a load balancer may call without a token."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from sqlalchemy import text

from medsight import __version__
from medsight.serve.deps import StoreDep, public
from medsight.serve.schemas import HealthResponse

router = APIRouter(prefix="/api", tags=["health"])


@router.get("/health", dependencies=[Depends(public)])
def health(store: StoreDep) -> HealthResponse:
    """The app runs and its database answers (no data, no counts: anyone may ask)."""
    with store.session() as session:
        session.execute(text("SELECT 1"))
    return HealthResponse(status="ok", version=__version__)
