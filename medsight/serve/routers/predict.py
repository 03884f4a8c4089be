"""``POST /api/predict``: an uploaded image (multipart field ``file``), a stored instance (``instance``) or a
whole stored series for a 3D model (``series``) -> label, probabilities, threshold, model, timing and links
to the heatmap and overlay. A segmentation model answers with its mask, an ECG model takes a record's
files (several ``file`` parts) and answers with every beat. Needs ``predict``.

The body is read with a byte limit before it is parsed (a multipart upload is never spooled to
disk by the framework); the work is ``medsight.predict.service`` on a worker thread. A stored instance
needs no flagged-instance check here: the roles with ``predict`` (admin, clinician) are the roles that
see flagged instances (``dicomweb.visibility``).
"""

from __future__ import annotations

import json
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from medsight.errors import BadInputError
from medsight.predict.served_ecg import MAX_PARTS
from medsight.serve.deps import ClientDep, requires
from medsight.serve.errors import HttpError
from medsight.serve.predict_schemas import ExplainMethod, PredictRequest, ResultOut
from medsight.serve.predict_views import ERRORS, as_http, prediction_service, result_out
from medsight.serve.uploads import read_body
from medsight.store import User

router = APIRouter(prefix="/api", tags=["predict"])
Predicter = Annotated[User, requires("predict")]
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the small fields around the file
_FORM = {
    "type": "object",
    "properties": {
        "file": {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": "one DICOM, PNG, JPEG or NIfTI image; for an ECG model, a record's files "
            "(NAME.hea, NAME.dat [, NAME.atr]), one .zip of them, or one MIT-BIH .npz",
        },
        "roi": {
            "type": "string",
            "format": "binary",
            "description": "for a segmentation model: the image's region of interest (e.g. a field-of-view "
            "mask), binary and of the image's size; nothing outside it is called structure",
        },
        "instance": {"type": "string", "description": "a stored SOP Instance UID, instead of a file"},
        "series": {
            "type": "string",
            "description": "a stored Series Instance UID: the whole series (3D models)",
        },
        "model": {"type": "string", "description": "NAME or NAME:VERSION (default: the default model)"},
        "explain": {"type": "string", "enum": ["gradcam", "occlusion"]},
    },
}
_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": _FORM},
            "application/x-www-form-urlencoded": {"schema": _FORM},
            "application/json": {"schema": PredictRequest.model_json_schema()},
        },
    }
}


async def _form(request: Request, body: bytes) -> FormData:
    """Parse the body already read (and size-checked) as a form, in memory."""

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        return await Request(request.scope, replay).form(max_files=MAX_PARTS + 1, max_fields=8)
    except Exception as err:  # malformed multipart: the parser's own error types
        raise BadInputError(
            f"the form could not be read ({type(err).__name__}); send multipart/form-data."
        ) from None


def _json_body(body: bytes) -> PredictRequest:
    try:
        return PredictRequest.model_validate_json(body)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise HttpError(422, f"invalid request: {problems or 'not JSON'}") from None
    except json.JSONDecodeError:
        raise HttpError(422, "invalid request: the body is not JSON.") from None


def _text(form: FormData, key: str) -> str | None:
    value = form.get(key)
    return value.strip() or None if isinstance(value, str) else None


async def _roi(form: FormData, with_upload: bool) -> tuple[str | None, bytes] | None:
    """The region of interest uploaded as the field 'roi', which goes only with an uploaded image."""
    rois = form.getlist("roi")
    if not rois:
        return None
    if len(rois) > 1 or not with_upload or not isinstance(rois[0], UploadFile):
        raise BadInputError(
            "send one region of interest as the field 'roi', beside the image it belongs to (field 'file')."
        )
    return rois[0].filename, await rois[0].read()


@router.post("/predict", responses=ERRORS, openapi_extra=_BODY)
async def predict(
    request: Request,
    user: Predicter,
    client: ClientDep,
    model: Annotated[str | None, Query(max_length=200, description="NAME or NAME:VERSION")] = None,
    explain: Annotated[ExplainMethod, Query(description="heatmap method")] = "gradcam",
) -> ResultOut:
    """Predict on an uploaded image, a stored instance or a stored series; DICOM uploads are de-identified and stored."""
    service = prediction_service(request)
    body = await read_body(request, service.predictor.limits.max_bytes + FORM_OVERHEAD)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        asked = _json_body(body)
        stored = service.predict_series if asked.series else service.predict_instance
        call = partial(
            stored, asked.series or asked.instance, asked.model or model, asked.explain, user, client
        )
    elif kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await _form(request, body)
        chosen, method = _text(form, "model") or model, _text(form, "explain") or explain
        uploads = [u for u in form.getlist("file") if isinstance(u, UploadFile)]
        instance, series = _text(form, "instance"), _text(form, "series")
        roi = await _roi(form, bool(uploads))
        if uploads:
            parts = [(u.filename, await u.read()) for u in uploads]
            call = partial(service.predict_files, parts, chosen, method, user, client, roi)
        elif instance:
            call = partial(service.predict_instance, instance, chosen, method, user, client)
        elif series:
            call = partial(service.predict_series, series, chosen, method, user, client)
        else:
            raise BadInputError(
                "send the image as the multipart field 'file', a stored instance's UID as 'instance', "
                "or a stored series' UID as 'series'."
            )
    else:
        raise HttpError(
            415, 'send multipart/form-data (field \'file\') or JSON ({"instance": UID} or {"series": UID}).'
        )
    with as_http():
        served = await run_in_threadpool(call)
    return result_out(served.result)
