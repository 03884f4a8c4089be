"""``POST /api/preview``: the uploaded file's image as a PNG the browser can draw (DICOM, NIfTI too).

The body is the file itself (any content type; the format is sniffed), read with the prediction
limits. Nothing is stored or logged: the picture goes back to the one who sent it. Needs ``predict``,
the permission of the roles that upload images to predict on.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from medsight.predict.preview import preview_png
from medsight.serve.deps import requires
from medsight.serve.predict_views import ERRORS, as_http, prediction_service
from medsight.serve.uploads import read_body
from medsight.store import User

router = APIRouter(prefix="/api", tags=["predict"])
Predicter = Annotated[User, requires("predict")]
_PNG = {200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}, **ERRORS}
_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.post("/preview", response_class=Response, responses=_PNG, openapi_extra=_BODY)
async def preview(
    request: Request,
    user: Predicter,
    name: Annotated[str | None, Query(max_length=255, description="the file's name, for messages")] = None,
) -> Response:
    """The image in the body (DICOM, PNG, JPEG or NIfTI) as an 8-bit PNG, windowed to its own range."""
    limits = prediction_service(request).predictor.limits
    data = await read_body(request, limits.max_bytes)
    with as_http():
        png = await run_in_threadpool(preview_png, data, limits, name)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, no-store"})
