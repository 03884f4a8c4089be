"""The History page's list, ``GET /api/studies``, is paged by study (``limit``, ``offset``), with the number
of studies in ``X-Total-Count``: a study's results never split across pages, each user's own or everyone's.
In Chromium, the History page lists them a page at a time ("Load more"), then the stored DICOM studies
without results (QIDO-RS ``limit``/``offset``), none twice."""

from __future__ import annotations

import pytest
from conftest import both_backends
from fastapi.testclient import TestClient
from predict_helpers import PASSWORD, bearer
from test_web_ui import CT, _browser_page, _log_in_page, _playwright_or_skip, _serve, _shot

from medsight.ingest import Ingestor
from medsight.serve import create_app
from medsight.store import Role, Store, add_user, create_token
from medsight.store.results import NewResult, add_result


def _result(store: Store, user: str, *, study_uid: str | None = None, upload_id: str | None = None) -> None:
    new = NewResult(
        model_name="m",
        model_version="1",
        label="finding",
        classes=["none", "finding"],
        probabilities=[0.3, 0.7],
        threshold=0.5,
        source_format="dicom" if study_uid else "png",
        explain_method="gradcam",
        heatmap_png=None,
        overlay_png=None,
        study_uid=study_uid,
        upload_id=upload_id,
    )
    add_result(store, new, user)


@pytest.fixture
def history(store: Store) -> tuple[TestClient, dict[str, str]]:
    """Alice: 5 studies (one DICOM study with two results, four pictures); Bob: 2 pictures."""
    tokens = {}
    for name, role in [("alice", Role.CLINICIAN), ("bob", Role.CLINICIAN), ("root", Role.ADMIN)]:
        add_user(store, name, role, PASSWORD)
        tokens[name] = create_token(store, name)
    _result(store, "alice", study_uid="1.2.3.4")
    for i in range(4):
        _result(store, "alice", upload_id=f"{i:032x}")
    _result(store, "alice", study_uid="1.2.3.4")  # the study's newest result: it comes first
    for i in range(2):
        _result(store, "bob", upload_id=f"b{i:031x}")
    return TestClient(create_app(store)), tokens


def _pages(client: TestClient, token: str, limit: int) -> tuple[list[list[dict]], set[str]]:
    pages, totals, offset = [], set(), 0
    while True:
        answer = client.get("/api/studies", params={"limit": limit, "offset": offset}, headers=bearer(token))
        assert answer.status_code == 200, answer.text
        totals.add(answer.headers["X-Total-Count"])
        if not answer.json():
            return pages, totals
        pages.append(answer.json())
        offset += limit


@both_backends
def test_studies_are_paged_whole_and_counted(history) -> None:
    client, tokens = history
    pages, totals = _pages(client, tokens["alice"], limit=2)
    assert [len(page) for page in pages] == [2, 2, 1] and totals == {"5"}
    studies = [study for page in pages for study in page]
    assert len({s["id"] for s in studies}) == 5  # no study on two pages
    assert studies[0]["id"] == "1.2.3.4" and studies[0]["result_count"] == 2  # whole, on one page
    times = [s["latest_at"] for s in studies]
    assert times == sorted(times, reverse=True)
    unpaged = client.get("/api/studies", headers=bearer(tokens["alice"])).json()
    assert [s["id"] for s in unpaged] == [s["id"] for s in studies]

    bob, bob_totals = _pages(client, tokens["bob"], limit=10)
    assert [len(page) for page in bob] == [2] and bob_totals == {"2"}  # his own only
    everyone, all_totals = _pages(client, tokens["root"], limit=4)
    assert [len(page) for page in everyone] == [4, 3] and all_totals == {"7"}


def test_bad_paging_values_are_refused_with_422(history) -> None:
    client, tokens = history
    for params in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"limit": "ten"}):
        answer = client.get("/api/studies", params=params, headers=bearer(tokens["alice"]))
        assert answer.status_code == 422, (params, answer.text)
        assert next(iter(params)) in answer.text


def _history_rows(page) -> list[str]:  # noqa: ANN001 - a Playwright page
    return page.eval_on_selector_all(
        "#studies-table tbody td.uid button", "buttons => buttons.map(b => b.title)"
    )


def test_the_history_page_loads_more_studies_in_chromium(store: Store, shared_data) -> None:  # noqa: ANN001
    """Pages of two: four studies with results (one of them a stored CT), then the stored MR alone."""
    sync_playwright = _playwright_or_skip()
    mr = shared_data / "dicom" / "mr_brain_epi_ge" / "axial_epi_fmri_interleaved_i_to_s-00001.dcm"
    Ingestor(store, workers=1).ingest_paths([shared_data / CT, mr], progress=False)
    stored = sorted(study.study_uid for study in store.find_studies())
    ct_uid = next(s.study_uid for s in store.find_studies() if "CT" in s.modalities)
    add_user(store, "dr-pages", Role.CLINICIAN, PASSWORD)
    for i in range(3):
        _result(store, "dr-pages", upload_id=f"{i:032x}")
    _result(store, "dr-pages", study_uid=ct_uid)
    server = _serve(create_app(store))
    try:
        with _browser_page(sync_playwright, next(server)) as page:
            _log_in_page(page, "dr-pages")
            page.evaluate("document.querySelector('#studies-table').dataset.pageSize = '2'")
            page.click(".tab[data-view=history]")
            page.wait_for_function("() => document.querySelectorAll('#studies-table tbody tr').length === 2")
            assert _history_rows(page)[0] == ct_uid and page.is_visible("#history-more")
            assert page.inner_text("#history-count") == "2 studies shown."
            page.click("#history-more")  # the last two studies with results; stored ones may follow
            page.wait_for_function("() => document.querySelectorAll('#studies-table tbody tr').length === 4")
            assert page.is_visible("#history-more")
            page.click("#history-more")
            page.wait_for_selector("#history-more", state="hidden")
            rows = _history_rows(page)
            assert len(rows) == 5 and len(set(rows)) == 5 and set(stored) <= set(rows)  # the CT once
            assert "no results yet" in page.inner_text("#studies-table tbody tr:last-child")
            assert page.inner_text("#history-count") == "5 studies shown (all)."
            _shot(page, "web-ui-10-history-pages")
    finally:
        next(server, None)  # stops uvicorn
