"""Predictions in service: POST /api/predict on a PNG, a DICOM and a stored instance; the results in a
user's history per role; the result as DICOM SR + Secondary Capture over DICOMweb; a burst of bad
inputs answered with 4xx JSON and nothing half-stored; ``medsight predict`` on the command line."""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from predict_helpers import (
    MODEL,
    app_with_model,
    bearer,
    huge_png,
    synthetic_test_png,
    two_channel_nifti,
)
from pydicom.sr.codedict import codes
from sqlalchemy import update

from medsight.serve.dicomweb.media import parse_multipart
from medsight.store import Store, check_store, create_token, list_tokens
from medsight.store.audit import query as audit_query
from medsight.store.models import ApiToken, Instance
from medsight.store.results import count_results

CT = "dicom/ct_head_ge/01.dcm"


@pytest.fixture
def served(store: Store, run_dir: Path) -> tuple[TestClient, dict[str, str]]:
    app, tokens = app_with_model(store, run_dir)
    return TestClient(app), tokens


def _post_file(client: TestClient, token: str, name: str, data: bytes, **fields: str):  # noqa: ANN202
    return client.post(
        "/api/predict",
        files={"file": (name, data, "application/octet-stream")},
        data=fields,
        headers=bearer(token),
    )


def _instance_count(store: Store) -> int:
    with store.session() as session:
        return session.query(Instance).count()


def _png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(b"\x89PNG")
    with Image.open(io.BytesIO(data)) as picture:
        return picture.size


def _retrieve(client: TestClient, token: str, study: str, series: str, sop: str) -> bytes:
    """One instance's file over WADO-RS."""
    url = f"/dicomweb/studies/{study}/series/{series}/instances/{sop}"
    response = client.get(
        url, headers=bearer(token) | {"Accept": 'multipart/related; type="application/dicom"'}
    )
    assert response.status_code == 200, response.text
    boundary = response.headers["content-type"].split("boundary=")[1].split(";")[0]
    (part,) = parse_multipart(response.content, boundary)
    return part.content


def test_predict_png_serves_heatmap_and_lists_history_per_role(
    served: tuple[TestClient, dict[str, str]], store: Store
) -> None:
    client, tokens = served
    # A name that says DICOM: the content decides, and the name never reaches the file system.
    response = _post_file(client, tokens["clinician"], "../../etc/passwd.dcm", synthetic_test_png())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["label"] in ("no lesion", "lesion") and body["classes"] == ["no lesion", "lesion"]
    assert len(body["probabilities"]) == 2 and abs(sum(body["probabilities"]) - 1) < 1e-5
    assert 0 < body["threshold"] < 1 and body["model"] == {"name": MODEL, "version": "1"}
    assert set(body["timing_ms"]) == {"preprocess", "inference", "explain"}
    assert body["explain_method"] == "gradcam" and body["source_format"] == "png"
    assert body["study_id"].startswith("upload-") and body["sr_sop_instance_uid"] is None
    called = body["probabilities"][1] >= body["threshold"]
    assert body["label"] == ("lesion" if called else "no lesion")

    heatmap = client.get(body["heatmap_url"], headers=bearer(tokens["clinician"]))
    overlay = client.get(body["overlay_url"], headers=bearer(tokens["clinician"]))
    assert heatmap.headers["content-type"] == "image/png" == overlay.headers["content-type"]
    assert _png_size(heatmap.content) == _png_size(overlay.content) == (32, 32)
    assert "no-store" in overlay.headers["cache-control"]

    occlusion = _post_file(client, tokens["clinician"], "x.png", synthetic_test_png(1), explain="occlusion")
    assert occlusion.status_code == 200 and occlusion.json()["explain_method"] == "occlusion"

    mine = client.get("/api/studies", headers=bearer(tokens["clinician"])).json()
    assert {s["id"] for s in mine} == {body["study_id"], occlusion.json()["study_id"]}
    study = client.get(f"/api/studies/{body['study_id']}", headers=bearer(tokens["clinician"])).json()
    assert study["kind"] == "upload" and study["results"][0]["id"] == body["id"]
    # Another clinician sees none of it; a viewer (results:read-all) and an admin see everything.
    assert client.get("/api/studies", headers=bearer(tokens["clinician2"])).json() == []
    assert client.get(f"/api/results/{body['id']}", headers=bearer(tokens["clinician2"])).status_code == 404
    assert client.get(body["overlay_url"], headers=bearer(tokens["clinician2"])).status_code == 404
    for role in ("viewer", "admin"):
        assert len(client.get("/api/studies", headers=bearer(tokens[role])).json()) == 2
    assert (
        client.get(f"/api/results/{body['id']}", headers=bearer(tokens["viewer"])).json()["label"]
        == body["label"]
    )

    predicted = audit_query(store, action="predict")
    assert len(predicted) == 2 and {e.resource_id for e in predicted} >= {body["id"]}
    reads = [e for e in audit_query(store, action="read") if e.resource_type == "result"]
    assert any(e.detail == {"image": "overlay"} for e in reads)


def test_dicom_upload_is_deidentified_and_results_round_trip_as_sr_and_sc(
    served: tuple[TestClient, dict[str, str]], store: Store, shared_data: Path
) -> None:
    client, tokens = served
    token = tokens["clinician"]
    original = (shared_data / CT).read_bytes()
    source = pydicom.dcmread(io.BytesIO(original))
    response = _post_file(client, token, "01.dcm", original)
    assert response.status_code == 200, response.text
    body = response.json()
    study, sop = body["study_instance_uid"], body["sop_instance_uid"]
    assert body["source_format"] == "dicom" and body["study_id"] == study
    assert study != source.StudyInstanceUID and sop != source.SOPInstanceUID  # de-identified on the way in
    assert _png_size(client.get(body["overlay_url"], headers=bearer(token)).content) == (512, 512)

    # The SR and the overlay SC are in the same study, found by QIDO-RS and retrieved by WADO-RS.
    found = client.get(f"/dicomweb/studies/{study}/instances", headers=bearer(token)).json()
    by_sop = {i["00080018"]["Value"][0]: i for i in found}
    assert {sop, body["sr_sop_instance_uid"], body["sc_sop_instance_uid"]} <= set(by_sop)
    sr_entry = by_sop[body["sr_sop_instance_uid"]]
    sr = _retrieve(client, token, study, sr_entry["0020000E"]["Value"][0], body["sr_sop_instance_uid"])
    report = hd.sr.srread(io.BytesIO(sr))
    assert isinstance(report, hd.sr.ComprehensiveSR)
    assert report.StudyInstanceUID == study and report.PatientID != source.PatientID
    content = hd.sr.ContentSequence.from_sequence(report.ContentSequence)
    (finding,) = [item for item in content if item.name == codes.DCM.Finding]
    assert finding.value.meaning == body["label"]
    numbers = {item.name: item.value for item in finding.ContentSequence if item.ValueType == "NUM"}
    index = body["classes"].index(body["label"])
    assert abs(numbers[codes.DCM.Probability] - body["probabilities"][index]) < 1e-6
    assert abs(numbers[codes.DCM.ThresholdValue] - body["threshold"]) < 1e-6
    (image_ref,) = [item for item in finding.ContentSequence if item.ValueType == "IMAGE"]
    assert image_ref.referenced_sop_instance_uid == sop
    texts = {item.name.meaning: item.value for item in content if item.ValueType == "TEXT"}
    assert texts["Algorithm Name"] == MODEL and texts["Algorithm Version"] == "1"

    sc_entry = by_sop[body["sc_sop_instance_uid"]]
    sc = pydicom.dcmread(
        io.BytesIO(
            _retrieve(client, token, study, sc_entry["0020000E"]["Value"][0], body["sc_sop_instance_uid"])
        )
    )
    assert (
        sc.Modality == "OT"
        and sc.PhotometricInterpretation == "RGB"
        and sc.pixel_array.shape == (512, 512, 3)
    )
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == sop

    # Predicting again on the stored instance (JSON body) adds a result to the same study.
    again = client.post("/api/predict", json={"instance": sop}, headers=bearer(token))
    assert again.status_code == 200, again.text
    assert again.json()["study_id"] == study and again.json()["sop_instance_uid"] == sop
    history = client.get(f"/api/studies/{study}", headers=bearer(token)).json()
    assert history["kind"] == "dicom" and history["result_count"] == 2
    assert check_store(store).ok


def _expire(store: Store, user: str) -> str:
    token = create_token(store, user, "soon")
    (info,) = [t for t in list_tokens(store, user) if t.name == "soon"]
    with store.write() as session:
        past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)
        session.execute(update(ApiToken).where(ApiToken.id == info.id).values(expires_at=past))
    return token


def test_burst_of_bad_inputs_is_refused_and_the_server_keeps_serving(
    served: tuple[TestClient, dict[str, str]], store: Store, shared_data: Path
) -> None:
    client, tokens = served
    token = tokens["clinician"]
    corrupt = (shared_data / CT).read_bytes()[:3000]  # header intact, pixel data cut short
    rgb_png = synthetic_test_png()
    bad = {
        "non-image": (
            _post_file(client, token, "scan.png", b"%PDF-1.4 not an image at all"),
            415,
            "not a DICOM",
        ),
        "empty": (_post_file(client, token, "empty.png", b""), 400, "empty"),
        "corrupt DICOM": (_post_file(client, token, "cut.dcm", corrupt), 400, "DICOM file"),
        "100 megapixels": (_post_file(client, token, "big.png", huge_png()), 413, "100 megapixels"),
        "2 channels": (_post_file(client, token, "two.nii", two_channel_nifti()), 422, "2 channels"),
        "unknown model": (_post_file(client, token, "ok.png", rgb_png, model="nope"), 404, "no model 'nope'"),
        "unknown version": (_post_file(client, token, "ok.png", rgb_png, model=f"{MODEL}:9"), 404, "version"),
        "bad method": (
            _post_file(client, token, "ok.png", rgb_png, explain="magic"),
            400,
            "unknown explanation",
        ),
        "no file": (
            client.post("/api/predict", data={"model": MODEL}, headers=bearer(token)),
            400,
            "field 'file'",
        ),
        "unknown instance": (
            client.post("/api/predict", json={"instance": "1.2.3"}, headers=bearer(token)),
            404,
            "1.2.3",
        ),
        "bad JSON": (
            client.post("/api/predict", json={"instanc": "1"}, headers=bearer(token)),
            422,
            "instance",
        ),
        "plain text": (
            client.post("/api/predict", content=b"x", headers=bearer(token) | {"Content-Type": "text/plain"}),
            415,
            "multipart",
        ),
        "expired token": (
            _post_file(client, _expire(store, "clinician-user"), "ok.png", rgb_png),
            401,
            "expired",
        ),
        "viewer": (_post_file(client, tokens["viewer"], "ok.png", rgb_png), 403, "predict"),
    }
    for what, (response, status, words) in bad.items():
        assert response.status_code == status, f"{what}: {response.status_code} {response.text[:200]}"
        assert words in response.json()["error"], f"{what}: {response.json()}"
    assert "passwd" not in str(audit_query(store))  # refusals are audited by kind, not by message

    # Nothing half-stored: no result, no instance, no orphan blob; then a good request still works.
    assert count_results(store) == 0 and _instance_count(store) == 0 and check_store(store).ok
    failed = [e for e in audit_query(store, action="predict") if e.outcome == "failed"]
    assert len(failed) >= 5
    good = _post_file(client, token, "ok.png", rgb_png)
    assert good.status_code == 200 and count_results(store) == 1


def test_upload_limit_in_bytes(store: Store, run_dir: Path) -> None:
    from medsight.predict import Limits

    app: FastAPI
    app, tokens = app_with_model(store, run_dir)
    app.state.predict_limits = Limits(max_bytes=100_000)
    client = TestClient(app)
    response = _post_file(client, tokens["clinician"], "x.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 300_000)
    assert response.status_code == 413 and "larger than this server's limit" in response.json()["error"]


def test_grey_model_takes_an_rgb_jpeg(served: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = served
    grey = np.asarray(Image.open(io.BytesIO(synthetic_test_png())))
    buffer = io.BytesIO()
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(buffer, format="JPEG")
    response = _post_file(client, tokens["clinician"], "colour.jpg", buffer.getvalue())
    assert response.status_code == 200 and response.json()["source_format"] == "jpeg"


def test_cli_predict_writes_a_row_per_file(run_cli, run_dir: Path, tmp_path: Path) -> None:  # noqa: ANN001
    (tmp_path / "good.png").write_bytes(synthetic_test_png())
    (tmp_path / "bad.txt").write_text("not an image")
    out = tmp_path / "results.csv"
    result = run_cli(
        "predict",
        run_dir,
        tmp_path / "good.png",
        tmp_path / "bad.txt",
        "--out",
        out,
        "--explain-dir",
        tmp_path / "maps",
    )
    assert result.returncode == 0, result.stderr
    rows = {Path(r["file"]).name: r for r in csv.DictReader(out.open())}
    assert rows["good.png"]["status"] == "ok" and rows["good.png"]["label"] in ("lesion", "no lesion")
    assert rows["bad.txt"]["status"] == "refused" and "not a DICOM" in rows["bad.txt"]["error"]
    assert len(list((tmp_path / "maps").glob("*.png"))) == 2
