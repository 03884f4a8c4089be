"""A user's history: ``/api/studies`` (results grouped by study), ``/api/results/{id}`` and its images.

Everything here needs ``results:read``; what it shows depends on the role: one's own results, or
everyone's for roles with ``results:read-all`` (see ``medsight.store.results``). Reads are audited.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from medsight.serve.deps import ClientDep, StoreDep, requires
from medsight.serve.predict_schemas import ResultOut, StudyOut
from medsight.serve.predict_views import ERRORS, result_out, studies_out
from medsight.store import NotFoundError, User, audit
from medsight.store.results import ImageKind, get_result, list_results, page_studies, result_image

router = APIRouter(prefix="/api", tags=["results"])
Reader = Annotated[User, requires("results:read")]
_PNG = {200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}, **ERRORS}


MAX_STUDIES = 500  # a page's studies; every one carries all its results
_TOTAL = {
    "X-Total-Count": {
        "description": "studies with results the caller may read, over all pages",
        "schema": {"type": "integer"},
    }
}


@router.get("/studies", responses={200: {"headers": _TOTAL}, **ERRORS})
def get_studies(
    response: Response,
    store: StoreDep,
    user: Reader,
    client: ClientDep,
    limit: Annotated[int, Query(ge=1, le=MAX_STUDIES, description="at most this many studies")] = 100,
    offset: Annotated[int, Query(ge=0, description="studies to skip (newest first)")] = 0,
) -> list[StudyOut]:
    """Studies with results the caller may read, newest first, each with all its results; paged by study
    (``limit``, ``offset``), the number of such studies in the ``X-Total-Count`` header."""
    page = page_studies(store, user, limit=limit, offset=offset)
    audit.record(store, "read", "results", None, user, client, detail={"count": len(page.records)})
    response.headers["X-Total-Count"] = str(page.total)
    found = {study.id: study for study in studies_out(page.records)}
    return [found[study_id] for study_id in page.study_ids if study_id in found]


@router.get("/studies/{study_id}", responses=ERRORS)
def get_study(study_id: str, store: StoreDep, user: Reader, client: ClientDep) -> StudyOut:
    """One study's results (a de-identified Study Instance UID, or upload-<hash> for a picture)."""
    records = list_results(store, user, study_id=study_id)
    if not records:
        raise NotFoundError(f"no results for study {study_id} (among the results you may read).")
    audit.record(store, "read", "study_results", study_id, user, client, detail={"count": len(records)})
    return studies_out(records)[0]


@router.get("/results/{result_id}", responses=ERRORS)
def get_one_result(result_id: str, store: StoreDep, user: Reader, client: ClientDep) -> ResultOut:
    """One result (yours, or anyone's for roles that read every result), with its image links."""
    return result_out(get_result(store, result_id, user, client))


async def _image(
    store: StoreDep, result_id: str, kind: ImageKind, user: User, client: str | None
) -> Response:
    data = await run_in_threadpool(result_image, store, result_id, kind, user, client)
    # private: a result shows a patient's image; no shared cache may keep it
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, no-store"})


@router.get("/results/{result_id}/heatmap.png", response_class=Response, responses=_PNG)
async def get_heatmap(result_id: str, store: StoreDep, user: Reader, client: ClientDep) -> Response:
    """The raw map as a grey PNG (white = where the model looked most)."""
    return await _image(store, result_id, "heatmap", user, client)


@router.get("/results/{result_id}/overlay.png", response_class=Response, responses=_PNG)
async def get_overlay(result_id: str, store: StoreDep, user: Reader, client: ClientDep) -> Response:
    """The image with the map over it in colour (a segmentation's: the mask tinted red)."""
    return await _image(store, result_id, "overlay", user, client)


@router.get("/results/{result_id}/mask.png", response_class=Response, responses=_PNG)
async def get_mask(result_id: str, store: StoreDep, user: Reader, client: ClientDep) -> Response:
    """A segmentation's mask at the image's size: 255 inside the structure, 0 outside."""
    return await _image(store, result_id, "mask", user, client)


@router.get("/results/{result_id}/strip.png", response_class=Response, responses=_PNG)
async def get_strip(result_id: str, store: StoreDep, user: Reader, client: ClientDep) -> Response:
    """An ECG result's strip plot: 10 s of the record, each beat coloured by the model's call."""
    return await _image(store, result_id, "strip", user, client)
