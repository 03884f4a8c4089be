"""DICOMweb against a real uvicorn server and the real ``dicomweb-client``: store the 28-slice CT,
search it, retrieve it; the pixels come back unchanged and no identifier of the original comes back
at all. Refusals, negotiation and the flagged-instance policy are checked with the in-process client.
Storing, searching and retrieving run on SQLite and PostgreSQL (``@both_backends``).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import httpx
import pydicom
import pytest
import uvicorn
from conftest import both_backends
from dicomweb_client import DICOMwebClient
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydicom import Dataset

from medsight.serve import ServeSettings, create_app
from medsight.serve.dicomweb.media import parse_multipart
from medsight.store import Role, Store, add_user, create_token
from medsight.store.audit import query as audit_query

PLANTED_NAME = "PLANTED^JANE^QUINCE"
PLANTED_DATE = "20200115"
STUDY_RANGE = "20190101-20200131"  # the research profile shifts dates back by 1..365 days
SETTINGS = ServeSettings(deid_profile="research")


def _ct_datasets(folder: Path) -> list[Dataset]:
    """The CT series with a patient name and a study date planted: identifiers to look for later."""
    datasets = []
    for path in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.PatientName, ds.StudyDate = PLANTED_NAME, PLANTED_DATE
        datasets.append(ds)
    return datasets


def _encode(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _pixel_hash(ds: Dataset) -> str:
    return hashlib.sha256(ds.pixel_array.tobytes()).hexdigest()


@pytest.fixture
def ct(shared_data: Path) -> list[Dataset]:
    return _ct_datasets(shared_data / "dicom" / "ct_head_ge")


@pytest.fixture
def tokens(store: Store) -> dict[str, str]:
    found = {}
    for role in (Role.ADMIN, Role.CLINICIAN, Role.RESEARCHER):
        add_user(store, f"{role.value}-user", role, "correct horse battery")
        found[role.value] = create_token(store, f"{role.value}-user")
    return found


@pytest.fixture
def app(store: Store) -> FastAPI:
    return create_app(store, SETTINGS)


@pytest.fixture
def live_url(app: FastAPI) -> Iterator[str]:
    """The app served by a real uvicorn on a free loopback port, for the length of one test."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def _headers(token: str, accept: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} | ({"Accept": accept} if accept else {})


def _stow_body(parts: list[bytes], boundary: str = "b0undary") -> tuple[bytes, str]:
    body = b"".join(
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n" for p in parts
    )
    return (
        body + f"--{boundary}--\r\n".encode(),
        f'multipart/related; type="application/dicom"; boundary={boundary}',
    )


@both_backends
def test_real_client_round_trip(
    live_url: str, ct: list[Dataset], tokens: dict[str, str], store: Store
) -> None:
    client = DICOMwebClient(url=f"{live_url}/dicomweb", headers=_headers(tokens["clinician"]))
    stored = client.store_instances(ct)
    assert len(stored.ReferencedSOPSequence) == 28 and "FailedSOPSequence" not in stored
    study_uid = stored.RetrieveURL.rsplit("/", 1)[1]
    assert study_uid != ct[0].StudyInstanceUID  # UIDs were replaced on the way in

    # QIDO-RS, with the common matching attributes
    (study,) = client.search_for_studies()
    pseudonym = study["00100020"]["Value"][0]
    assert pseudonym.startswith("MS-") and study["00201208"]["Value"] == [28]
    for filters in (
        {"PatientID": pseudonym},
        {"StudyInstanceUID": study_uid},
        {"StudyDate": STUDY_RANGE},
        {"ModalitiesInStudy": "CT"},
        {"StudyDescription": "hea*"},
    ):
        assert len(client.search_for_studies(search_filters=filters)) == 1, filters
    for filters in ({"PatientID": ct[0].PatientID}, {"StudyDate": "20210101-"}, {"ModalitiesInStudy": "MR"}):
        assert client.search_for_studies(search_filters=filters) == [], filters
    (series,) = client.search_for_series(study_uid, search_filters={"Modality": "CT"})
    series_uid = series["0020000E"]["Value"][0]
    instances = client.search_for_instances(study_uid, series_uid)
    assert len(instances) == 28
    assert len(client.search_for_instances(study_uid, series_uid, limit=5, offset=25)) == 3
    assert len(client.search_for_series(search_filters={"PatientID": pseudonym})) == 1

    # WADO-RS: the files as stored, pixels untouched by de-identification
    retrieved = client.retrieve_study(study_uid)
    assert sorted(map(_pixel_hash, retrieved)) == sorted(map(_pixel_hash, ct))
    assert {str(ds.PatientID) for ds in retrieved} == {pseudonym}
    sop_uid = instances[0]["00080018"]["Value"][0]
    one = client.retrieve_instance(study_uid, series_uid, sop_uid)
    assert one.SOPInstanceUID == sop_uid and one.PatientIdentityRemoved == "YES"
    metadata = client.retrieve_series_metadata(study_uid, series_uid)
    assert len(metadata) == 28 and all("BulkDataURI" in m["7FE00010"] for m in metadata)

    # No original identifier in any byte that comes back, whichever resource is asked
    token = tokens["clinician"]
    base = f"{live_url}/dicomweb/studies/{study_uid}"
    answers = [
        httpx.get(base, headers=_headers(token, 'multipart/related; type="application/dicom"'), timeout=60),
        httpx.get(f"{base}/metadata", headers=_headers(token), timeout=60),
        httpx.get(f"{live_url}/dicomweb/instances", headers=_headers(token), timeout=60),
    ]
    secrets = {str(ct[0].PatientID), PLANTED_NAME, "QUINCE", ct[0].StudyInstanceUID, PLANTED_DATE}
    secrets |= {ds.SOPInstanceUID for ds in ct} | {ds.SeriesInstanceUID for ds in ct}
    for answer in answers:
        assert answer.status_code == 200
        leaked = [s for s in secrets if s.encode() in answer.content]
        assert not leaked, f"{answer.url}: {leaked}"

    reads = audit_query(store, user="clinician-user", action="read")
    assert {e.resource_type for e in reads} >= {"instance", "query"}
    assert all(e.client == "127.0.0.1" for e in reads)


@both_backends
def test_stow_reports_each_failed_part(app: FastAPI, ct: list[Dataset], tokens: dict[str, str]) -> None:
    client = TestClient(app)
    body, content_type = _stow_body([_encode(ct[0]), b"this is not DICOM at all"])
    headers = _headers(tokens["clinician"]) | {"Content-Type": content_type}
    response = client.post("/dicomweb/studies", content=body, headers=headers)
    assert response.status_code == 202 and response.headers["content-type"] == "application/dicom+json"
    answer = Dataset.from_json(response.json())
    assert len(answer.ReferencedSOPSequence) == 1
    (failed,) = answer.FailedSOPSequence
    assert failed.FailureReason == 0xC000 and "not a DICOM file" in str(failed[0x00091001].value)

    body, content_type = _stow_body([b"garbage", b""])
    response = client.post(
        "/dicomweb/studies", content=body, headers=headers | {"Content-Type": content_type}
    )
    assert response.status_code == 409 and len(response.json()["00081198"]["Value"]) == 2

    body, content_type = _stow_body([_encode(ct[1])])
    wrong_study = client.post(
        "/dicomweb/studies/1.2.3.4", content=body, headers=headers | {"Content-Type": content_type}
    )
    assert wrong_study.status_code == 409 and "another study" in wrong_study.text
    right_study = client.post(
        f"/dicomweb/studies/{ct[1].StudyInstanceUID}",
        content=body,
        headers=headers | {"Content-Type": content_type},
    )
    assert right_study.status_code == 200
    again = client.post("/dicomweb/studies", content=body, headers=headers | {"Content-Type": content_type})
    assert again.status_code == 200  # a duplicate is safe with us: counted as stored

    not_multipart = client.post(
        "/dicomweb/studies", content=b"x", headers=headers | {"Content-Type": "application/dicom"}
    )
    assert not_multipart.status_code == 415 and "error" in not_multipart.json()
    cut_short = client.post(
        "/dicomweb/studies", content=body[:-30], headers=headers | {"Content-Type": content_type}
    )
    assert cut_short.status_code == 400 and "closing boundary" in cut_short.json()["error"]
    small = create_app(app.state.store, ServeSettings(max_request_bytes=1000))
    too_big = TestClient(small).post(
        "/dicomweb/studies", content=body, headers=headers | {"Content-Type": content_type}
    )
    assert too_big.status_code == 413


def _stored_series(client: TestClient, token: str) -> tuple[str, str, list[str]]:
    (study,) = client.get("/dicomweb/studies", headers=_headers(token)).json()
    study_uid = study["0020000D"]["Value"][0]
    (series,) = client.get(f"/dicomweb/studies/{study_uid}/series", headers=_headers(token)).json()
    series_uid = series["0020000E"]["Value"][0]
    instances = client.get(
        f"/dicomweb/studies/{study_uid}/series/{series_uid}/instances", headers=_headers(token)
    )
    return study_uid, series_uid, [i["00080018"]["Value"][0] for i in instances.json()]


def test_negotiation_and_frames(app: FastAPI, ct: list[Dataset], tokens: dict[str, str]) -> None:
    client, token = TestClient(app), tokens["clinician"]
    body, content_type = _stow_body([_encode(ds) for ds in ct[:2]])
    client.post("/dicomweb/studies", content=body, headers=_headers(token) | {"Content-Type": content_type})
    study_uid, series_uid, sops = _stored_series(client, token)
    instance = f"/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sops[0]}"

    assert (
        client.get("/dicomweb/studies", headers=_headers(token, "application/dicom+xml")).status_code == 406
    )
    assert client.get(instance, headers=_headers(token, "image/jpeg")).status_code == 406
    jpeg_ls = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.80'
    assert client.get(instance, headers=_headers(token, jpeg_ls)).status_code == 406
    as_stored = 'multipart/related; type="application/dicom"; transfer-syntax=*, */*;q=0.1'
    response = client.get(instance, headers=_headers(token, as_stored))
    assert response.status_code == 200
    boundary = response.headers["content-type"].split("boundary=")[1].split(";")[0]
    (part,) = parse_multipart(response.content, boundary)
    stored = pydicom.dcmread(BytesIO(part.content))

    frames = client.get(f"{instance}/frames/1", headers=_headers(token))
    assert frames.status_code == 200 and 'type="application/octet-stream"' in frames.headers["content-type"]
    boundary = frames.headers["content-type"].split("boundary=")[1].split(";")[0]
    (frame,) = parse_multipart(frames.content, boundary)
    assert frame.content == stored.PixelData
    assert client.get(f"{instance}/frames/2", headers=_headers(token)).status_code == 400
    assert (
        client.get("/dicomweb/studies", params={"PatientName": "x*"}, headers=_headers(token)).status_code
        == 400
    )
    assert (
        client.get("/dicomweb/studies", params={"StudyDate": "2020"}, headers=_headers(token)).status_code
        == 400
    )
    assert client.get("/dicomweb/studies/1.2.3/metadata", headers=_headers(token)).status_code == 404


@both_backends
def test_flagged_instances_hidden_from_researchers_until_cleared(
    app: FastAPI, ct: list[Dataset], tokens: dict[str, str]
) -> None:
    """Burned-in text risk: admin and clinician see the instance; a researcher not, until an admin clears it."""
    client = TestClient(app)
    screen = ct[0].copy()
    screen.Modality = "OT"  # "other", with no BurnedInAnnotation: may carry text in its pixels
    body, content_type = _stow_body([_encode(screen), _encode(ct[1])])
    client.post(
        "/dicomweb/studies",
        content=body,
        headers=_headers(tokens["clinician"]) | {"Content-Type": content_type},
    )
    admin = _headers(tokens["admin"])
    (flagged,) = client.get("/api/admin/instances/flagged", headers=admin).json()
    sop, study, series = (
        flagged["sop_instance_uid"],
        flagged["study_instance_uid"],
        flagged["series_instance_uid"],
    )
    url = f"/dicomweb/studies/{study}/series/{series}/instances/{sop}"

    for role, status in (("admin", 200), ("clinician", 200), ("researcher", 403)):
        assert client.get(url, headers=_headers(tokens[role])).status_code == status, role
    as_researcher = client.get("/dicomweb/instances", headers=_headers(tokens["researcher"])).json()
    assert sop not in str(as_researcher) and len(as_researcher) == 1
    whole_series = client.get(
        f"/dicomweb/studies/{study}/series/{series}", headers=_headers(tokens["researcher"])
    )
    boundary = whole_series.headers["content-type"].split("boundary=")[1].split(";")[0]
    assert len(parse_multipart(whole_series.content, boundary)) == 1  # the other, unflagged slice

    cleared = client.post(f"/api/admin/instances/{sop}/clear-flag", headers=admin)
    assert cleared.status_code == 200 and cleared.json()["excluded"] is False
    assert client.get(url, headers=_headers(tokens["researcher"])).status_code == 200
