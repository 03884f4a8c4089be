"""DICOMweb (PS3.18) under /dicomweb: QIDO-RS and WADO-RS.

QIDO-RS and WADO-RS (search, retrieve, metadata) need ``studies:read``; STOW-RS is in ``stow.py``.
The work is done in ``medsight.serve.dicomweb``; these handlers negotiate, authorise and answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from medsight.serve.deps import ClientDep, SettingsDep, StoreDep, requires
from medsight.serve.dicomweb import qido, visibility, wado
from medsight.serve.dicomweb.http import ERROR_RESPONSES, base_url, dicom_json_response
from medsight.serve.dicomweb.media import (
    DICOM,
    DICOM_JSON,
    OCTET_STREAM,
    multipart_content_type,
    multipart_stream,
    negotiate_json,
    negotiate_multipart,
    new_boundary,
)
from medsight.serve.schemas import DicomJsonDataset
from medsight.serve.settings import ServeSettings
from medsight.store import InstanceRecord, Store, User, audit

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])
Reader = Annotated[User, requires("studies:read")]

_DICOM_JSON_LIST = {
    200: {
        "content": {DICOM_JSON: {"schema": {"type": "array", "items": DicomJsonDataset.model_json_schema()}}}
    },
    **ERROR_RESPONSES,
}
_MULTIPART = {
    200: {
        "content": {f'multipart/related; type="{DICOM}"': {"schema": {"type": "string", "format": "binary"}}}
    },
    **ERROR_RESPONSES,
}
_FRAMES = {
    200: {
        "content": {
            f'multipart/related; type="{OCTET_STREAM}"': {"schema": {"type": "string", "format": "binary"}}
        }
    },
    **ERROR_RESPONSES,
}


def _qido_openapi(level: str) -> dict[str, Any]:
    """The query parameters, for the OpenAPI schema (they are parsed from the URL as PS3.18 spells them)."""
    names = sorted(qido.LEVEL_KEYS[level]) + ["limit", "offset", "includefield", "fuzzymatching"]
    return {
        "parameters": [
            {"name": n, "in": "query", "required": False, "schema": {"type": "string"}} for n in names
        ]
    }


_SEARCHES = {"study": qido.search_studies, "series": qido.search_series, "instance": qido.search_instances}


def _searcher(
    request: Request, store: StoreDep, settings: SettingsDep, user: Reader, client: ClientDep
) -> Callable[..., JSONResponse]:
    """What every QIDO-RS handler shares, as a dependency: ``search(level, **path_uids)`` answers."""

    def search(level: str, **scope: str) -> JSONResponse:
        media = negotiate_json(request.headers.get("accept"))
        query = qido.parse_query(request.query_params.multi_items(), level)
        for keyword, value in scope.items():  # the path's UIDs narrow the search
            query.filters[keyword] = [value]
        found = _SEARCHES[level](store, user, query, base_url(request, settings))
        # Which attributes were searched, never their values: a user may have typed a real patient ID.
        detail = {"matches": len(found), "filters": sorted(query.filters)}
        audit.record(store, "read", "query", level, user, client, detail=detail)
        return dicom_json_response(found, media)

    return search


Search = Annotated[Callable[..., JSONResponse], Depends(_searcher)]


def _qido(path: str, level: str) -> Callable[[Callable[..., Response]], Callable[..., Response]]:
    """The route decorator of a QIDO-RS search at ``level``."""
    return router.get(
        path, response_class=Response, responses=_DICOM_JSON_LIST, openapi_extra=_qido_openapi(level)
    )


@_qido("/studies", "study")
def search_for_studies(search: Search) -> Response:
    """QIDO-RS: search for studies."""
    return search("study")


@_qido("/series", "series")
def search_for_series(search: Search) -> Response:
    """QIDO-RS: search for series in all studies."""
    return search("series")


@_qido("/instances", "instance")
def search_for_instances(search: Search) -> Response:
    """QIDO-RS: search for instances in all studies."""
    return search("instance")


@_qido("/studies/{study}/series", "series")
def search_for_study_series(study: str, search: Search) -> Response:
    """QIDO-RS: search for series of one study."""
    return search("series", StudyInstanceUID=study)


@_qido("/studies/{study}/instances", "instance")
def search_for_study_instances(study: str, search: Search) -> Response:
    """QIDO-RS: search for instances of one study."""
    return search("instance", StudyInstanceUID=study)


@_qido("/studies/{study}/series/{series}/instances", "instance")
def search_for_series_instances(study: str, series: str, search: Search) -> Response:
    """QIDO-RS: search for instances of one series."""
    return search("instance", StudyInstanceUID=study, SeriesInstanceUID=series)


def _retrieve(
    request: Request, store: Store, records: list[InstanceRecord], user: User, client: str | None
) -> StreamingResponse:
    syntaxes = {record.transfer_syntax for record in records}
    negotiate_multipart(request.headers.get("accept"), DICOM, syntaxes)
    boundary = new_boundary()
    parts = wado.instance_bytes(store, records, user, client)
    syntax = next(iter(syntaxes)) if len(syntaxes) == 1 else None
    return StreamingResponse(
        multipart_stream(parts, DICOM, boundary), media_type=multipart_content_type(DICOM, boundary, syntax)
    )


def _metadata(
    request: Request,
    settings: ServeSettings,
    store: Store,
    records: list[InstanceRecord],
    user: User,
    client: str | None,
) -> JSONResponse:
    media = negotiate_json(request.headers.get("accept"))
    return dicom_json_response(
        wado.metadata(store, records, user, client, base_url(request, settings)), media
    )


@router.get("/studies/{study}", response_class=Response, responses=_MULTIPART)
def retrieve_study(
    study: str, request: Request, store: StoreDep, user: Reader, client: ClientDep
) -> Response:
    """WADO-RS: every instance of a study, as stored (de-identified)."""
    return _retrieve(request, store, visibility.study_instances(store, study, user), user, client)


@router.get("/studies/{study}/series/{series}", response_class=Response, responses=_MULTIPART)
def retrieve_series(
    study: str, series: str, request: Request, store: StoreDep, user: Reader, client: ClientDep
) -> Response:
    """WADO-RS: every instance of a series."""
    return _retrieve(request, store, visibility.series_instances(store, study, series, user), user, client)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}", response_class=Response, responses=_MULTIPART
)
def retrieve_instance(
    study: str, series: str, instance: str, request: Request, store: StoreDep, user: Reader, client: ClientDep
) -> Response:
    """WADO-RS: one instance."""
    return _retrieve(
        request, store, [visibility.one_instance(store, study, series, instance, user)], user, client
    )


@router.get("/studies/{study}/metadata", response_class=Response, responses=_DICOM_JSON_LIST)
def retrieve_study_metadata(
    study: str, request: Request, store: StoreDep, settings: SettingsDep, user: Reader, client: ClientDep
) -> Response:
    """WADO-RS: metadata of every instance of a study; pixel data as BulkDataURI."""
    return _metadata(request, settings, store, visibility.study_instances(store, study, user), user, client)


@router.get("/studies/{study}/series/{series}/metadata", response_class=Response, responses=_DICOM_JSON_LIST)
def retrieve_series_metadata(
    study: str,
    series: str,
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    user: Reader,
    client: ClientDep,
) -> Response:
    """WADO-RS: metadata of every instance of a series."""
    return _metadata(
        request, settings, store, visibility.series_instances(store, study, series, user), user, client
    )


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/metadata",
    response_class=Response,
    responses=_DICOM_JSON_LIST,
)
def retrieve_instance_metadata(
    study: str,
    series: str,
    instance: str,
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    user: Reader,
    client: ClientDep,
) -> Response:
    """WADO-RS: metadata of one instance."""
    record = visibility.one_instance(store, study, series, instance, user)
    return _metadata(request, settings, store, [record], user, client)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/frames/{frame_list}",
    response_class=Response,
    responses=_FRAMES,
)
def retrieve_frames(
    study: str,
    series: str,
    instance: str,
    frame_list: str,
    request: Request,
    store: StoreDep,
    user: Reader,
    client: ClientDep,
) -> Response:
    """WADO-RS: frames (``1,2,3``) of an uncompressed instance, as multipart/related octet streams."""
    record = visibility.one_instance(store, study, series, instance, user)
    negotiate_multipart(request.headers.get("accept"), OCTET_STREAM, {record.transfer_syntax})
    numbers = wado.parse_frame_list(frame_list, record.frames or 1)
    chunks = wado.frames(store.get_instance_bytes(record.sop_uid, user=user, client=client), numbers)
    boundary = new_boundary()
    body = b"".join(multipart_stream(chunks, OCTET_STREAM, boundary))
    return Response(body, media_type=multipart_content_type(OCTET_STREAM, boundary, record.transfer_syntax))
