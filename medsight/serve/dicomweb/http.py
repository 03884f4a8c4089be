"""What the DICOMweb routers share: the base URL of RetrieveURLs, DICOM JSON answers, error docs."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from medsight.serve.schemas import ErrorResponse
from medsight.serve.settings import ServeSettings

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 406, 409, 413, 415)
}


def base_url(request: Request, settings: ServeSettings) -> str:
    """The /dicomweb root as clients reach it (``public_url`` when set: behind a proxy)."""
    root = settings.public_url or str(request.base_url)
    return root.rstrip("/") + "/dicomweb"


def dicom_json_response(content: Any, media_type: str, status_code: int = 200) -> JSONResponse:
    return JSONResponse(content, status_code=status_code, media_type=media_type)
