"""Glue between the predict/results/models routers and the packages: the shared prediction service,
refusals as HTTP statuses, and records as response bodies."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import Request

from medsight.predict import Limits, Predictor
from medsight.predict.errors import PredictInputError
from medsight.predict.service import PredictionService
from medsight.serve.errors import HttpError
from medsight.serve.predict_schemas import (
    EcgOut,
    ModelRef,
    ModelVersionOut,
    ResultOut,
    SegmentationOut,
    StudyOut,
    TimingMs,
)
from medsight.serve.schemas import ErrorResponse
from medsight.store.model_cards import CardedModel
from medsight.store.results import ResultRecord

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 413, 415, 422)
}
_service_lock = threading.Lock()


def prediction_service(request: Request) -> PredictionService:
    """One service (and model cache) per app, made on first use; ``app.state.predict_limits`` overrides limits."""
    state = request.app.state
    with _service_lock:
        if getattr(state, "prediction_service", None) is None:
            limits = getattr(state, "predict_limits", None) or Limits()
            state.prediction_service = PredictionService(
                state.store, Predictor(limits), deid_profile=state.settings.deid_profile
            )
        return state.prediction_service


@contextmanager
def as_http() -> Iterator[None]:
    """A refused input answers with its own status (413 too large, 415 not an image, 422 unusable)."""
    try:
        yield
    except PredictInputError as err:
        raise HttpError(err.http_status, str(err)) from None


def _image_url(record: ResultRecord, kind: str) -> str | None:
    return f"/api/results/{record.id}/{kind}.png" if kind in record.image_kinds else None


def _task_block(record: ResultRecord) -> dict[str, Any]:
    """``segmentation`` or ``ecg``: what the task found (kept in ``details``) with its image's link."""
    details = record.details or {}
    if record.task == "segmentation":
        return {"segmentation": SegmentationOut(**details, mask_url=_image_url(record, "mask"))}
    if record.task == "ecg":
        return {"ecg": EcgOut(**details, strip_url=_image_url(record, "strip"))}
    return {}


def result_out(record: ResultRecord) -> ResultOut:
    return ResultOut(
        id=record.id,
        task=record.task,  # type: ignore[arg-type]
        label=record.label,
        probabilities=record.probabilities,
        classes=record.classes,
        threshold=record.threshold,
        model=ModelRef(name=record.model_name, version=record.model_version),
        timing_ms=TimingMs(**{k: record.timing.get(k, 0.0) for k in ("preprocess", "inference", "explain")}),
        explain_method=record.explain_method if record.task == "classification" else None,  # type: ignore[arg-type]
        heatmap_url=_image_url(record, "heatmap"),
        overlay_url=_image_url(record, "overlay"),
        **_task_block(record),
        study_id=record.study_id,
        study_instance_uid=record.study_uid,
        sop_instance_uid=record.sop_uid,
        sr_sop_instance_uid=record.sr_sop_uid,
        sc_sop_instance_uid=record.sc_sop_uid,
        source_format=record.source_format,
        user=record.user,
        created_at=record.created_at,
    )


def studies_out(records: list[ResultRecord]) -> list[StudyOut]:
    """Results grouped by study, newest study first (``records`` come newest first)."""
    grouped: dict[str, list[ResultRecord]] = {}
    for record in records:
        grouped.setdefault(record.study_id, []).append(record)
    return [
        StudyOut(
            id=study_id,
            kind="dicom" if items[0].study_uid else "upload",
            result_count=len(items),
            latest_label=items[0].label,
            latest_at=items[0].created_at,
            results=[result_out(r) for r in items],
        )
        for study_id, items in grouped.items()
    ]


def model_version_out(carded: CardedModel, default_key: str | None = None) -> ModelVersionOut:
    """``default_key`` (NAME:VERSION) is the model used when a prediction names none."""
    card, model = carded.card, carded.model
    return ModelVersionOut(
        name=model.name,
        version=model.version,
        task=card.get("task") or "classification",
        registered_at=model.created_at,
        is_default=carded.is_default or carded.key == default_key,
        dataset=card.get("dataset") or {},
        classes=card.get("classes"),
        metrics=card.get("metrics") or model.metrics,
        threshold=card.get("threshold") or {},
        calibration=card.get("calibration") or {},
        intended_use=card.get("intended_use") or "not recorded",
        limitations=list(card.get("limitations") or []),
        architecture=card.get("architecture") or {},
        serving_variant=card.get("serving_variant"),
        heatmap=(card.get("explanation") or {}).get("heatmap"),
        trained_with_roi=trained_with_roi(card),
    )


def trained_with_roi(card: dict) -> bool:
    """Whether the card's model was trained inside regions of interest (cards before it was recorded: no)."""
    return bool((card.get("input") or {}).get("trained_with_roi"))
