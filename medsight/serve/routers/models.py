"""Registered models and their cards: ``/api/models``, ``/api/models/{name}`` (JSON) and
``/api/models/{name}/card`` (HTML). Reading them needs ``models:read`` (every role)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from medsight.serve.deps import StoreDep, requires
from medsight.serve.model_card import render_card
from medsight.serve.predict_schemas import ModelCardOut, ModelSummaryOut
from medsight.serve.predict_views import ERRORS, model_version_out, trained_with_roi
from medsight.store import NotFoundError, Store, User
from medsight.store.model_cards import default_model, list_carded

router = APIRouter(prefix="/api/models", tags=["models"])
ModelReader = Annotated[User, requires("models:read")]
_HTML = {200: {"content": {"text/html": {"schema": {"type": "string"}}}}, **ERRORS}


def _card(store: Store, name: str, version: str | None) -> ModelCardOut:
    carded = list_carded(store, name)
    default = default_model(store).key if carded else None
    versions = [model_version_out(m, default) for m in carded]
    if not versions:
        raise NotFoundError(f"no model {name!r} is registered; GET /api/models lists them.")
    if version is None:
        return ModelCardOut(name=name, latest=versions[-1], versions=versions)
    chosen = [v for v in versions if v.version == version]
    if not chosen:
        raise NotFoundError(
            f"model {name!r} has no version {version!r}; it has {', '.join(v.version for v in versions)}."
        )
    return ModelCardOut(name=name, latest=chosen[0], versions=versions)


@router.get("", responses=ERRORS)
def get_models(store: StoreDep, user: ModelReader) -> list[ModelSummaryOut]:
    """Every registered version; ``is_default`` marks the one a prediction uses when it names none."""
    carded = list_carded(store)
    default = default_model(store).key if carded else None
    return [
        ModelSummaryOut(
            name=m.model.name,
            version=m.model.version,
            task=m.card.get("task") or "classification",
            registered_at=m.model.created_at,
            is_default=m.key == default,
            dataset=(m.card.get("dataset") or {}).get("name"),
            test_auc=((m.model.metrics.get("test") or {}).get("auc") or {}).get("value"),
            trained_with_roi=trained_with_roi(m.card),
        )
        for m in carded
    ]


@router.get("/{name}", responses=ERRORS)
def get_model_card(
    name: str,
    store: StoreDep,
    user: ModelReader,
    version: Annotated[str | None, Query(max_length=64, description="default: the newest")] = None,
) -> ModelCardOut:
    """The model card as JSON: data and licence, metrics with CIs, threshold, calibration, use, history."""
    return _card(store, name, version)


@router.get("/{name}/card", response_class=HTMLResponse, responses=_HTML)
def get_model_card_html(
    name: str,
    store: StoreDep,
    user: ModelReader,
    version: Annotated[str | None, Query(max_length=64)] = None,
) -> HTMLResponse:
    """The model card as a self-contained HTML page."""
    return HTMLResponse(render_card(_card(store, name, version)))
