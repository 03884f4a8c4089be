"""STOW-RS (PS3.18 10.5) under /dicomweb: storing needs ``studies:upload``.

Parts go through ``medsight.ingest`` (validate, de-identify, store) in ``dicomweb.stow``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from medsight.errors import BadInputError
from medsight.serve.deps import ClientDep, SettingsDep, StoreDep, requires
from medsight.serve.dicomweb import stow
from medsight.serve.dicomweb.http import ERROR_RESPONSES, base_url, dicom_json_response
from medsight.serve.dicomweb.media import (
    DICOM,
    DICOM_JSON,
    boundary_of,
    negotiate_json,
    parse_media_type,
    parse_multipart,
)
from medsight.serve.errors import HttpError
from medsight.serve.schemas import DicomJsonDataset
from medsight.serve.settings import ServeSettings
from medsight.serve.uploads import read_body
from medsight.store import Store, User

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])
Uploader = Annotated[User, requires("studies:upload")]

# After the error responses: 409 here is the DICOM JSON answer "none stored", not a plain error.
_STOW = ERROR_RESPONSES | {
    code: {"description": text, "content": {DICOM_JSON: {"schema": DicomJsonDataset.model_json_schema()}}}
    for code, text in ((200, "all stored"), (202, "some stored, some failed"), (409, "none stored"))
}
_BODY = {
    "requestBody": {
        "required": True,
        "description": "DICOM files, one per part (PS3.18 10.5.1)",
        "content": {f'multipart/related; type="{DICOM}"': {"schema": {"type": "string", "format": "binary"}}},
    }
}


async def _stow(
    request: Request, store: Store, settings: ServeSettings, user: User, client: str | None, study: str | None
) -> JSONResponse:
    media = negotiate_json(request.headers.get("accept"))
    content_type = request.headers.get("content-type", "")
    boundary = boundary_of(content_type)
    part_type = parse_media_type(content_type).params.get("type", DICOM).lower()
    if part_type != DICOM:
        raise HttpError(
            415,
            f'STOW-RS here takes multipart/related; type="{DICOM}" (whole DICOM files), not {part_type!r}.',
        )
    parts = parse_multipart(
        await read_body(request, settings.max_request_bytes, "; send fewer instances per request"), boundary
    )
    if not parts:
        raise BadInputError("the STOW-RS request has no parts: send at least one DICOM file.")
    result = await run_in_threadpool(
        stow.store_parts,
        store,
        parts,
        settings=settings,
        user=user,
        client=client,
        base_url=base_url(request, settings),
        study_uid=study,
    )
    return dicom_json_response(result.body, media, result.status_code)


@router.post("/studies", response_class=Response, responses=_STOW, openapi_extra=_BODY)
async def store_instances(
    request: Request, store: StoreDep, settings: SettingsDep, user: Uploader, client: ClientDep
) -> Response:
    """STOW-RS: store DICOM files (de-identified on the way in, exactly as `medsight ingest` does)."""
    return await _stow(request, store, settings, user, client, None)


@router.post("/studies/{study}", response_class=Response, responses=_STOW, openapi_extra=_BODY)
async def store_study_instances(
    study: str, request: Request, store: StoreDep, settings: SettingsDep, user: Uploader, client: ClientDep
) -> Response:
    """STOW-RS into one study: parts of another study (by original or de-identified UID) fail."""
    return await _stow(request, store, settings, user, client, study)
