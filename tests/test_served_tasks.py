"""Segmentation models in service: registered with a card of their own metrics, and answering
``POST /api/predict`` with a mask (PNG, and a DICOM SEG in the study for a DICOM), through the same
de-identification, storage, access checks and refusals as a classifier (ECG models: test_served_ecg.py)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import both_backends
from fastapi.testclient import TestClient
from PIL import Image
from predict_helpers import (
    app_with_model,
    bearer,
    huge_png,
    tiny_segmentation_run,
    two_channel_nifti,
)
from pydicom.uid import SegmentationStorage
from test_predict import _retrieve
from test_segmentation import _rgb_dicom

from medsight.predict.registration import register_run
from medsight.predict.segmentation import segment_file
from medsight.store import Store, check_store
from medsight.store.results import count_results

SEGMENTER = "vessels"


@pytest.fixture(scope="module")
def segmentation(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return tiny_segmentation_run(tmp_path_factory)


@pytest.fixture
def seg_served(store: Store, segmentation: tuple[Path, Path]) -> tuple[TestClient, dict[str, str]]:
    run_dir, _ = segmentation
    app, tokens = app_with_model(store, run_dir)  # a classifier's name; the segmenter is asked by name
    register_run(store, run_dir, SEGMENTER, "1", user="test")
    return TestClient(app), tokens


def _post(client: TestClient, token: str, name: str, data: bytes, model: str = SEGMENTER):  # noqa: ANN202
    files = {"file": (name, data, "application/octet-stream")}
    return client.post("/api/predict", files=files, data={"model": model}, headers=bearer(token))


def _png(data: bytes) -> np.ndarray:
    assert data.startswith(b"\x89PNG")
    return np.asarray(Image.open(io.BytesIO(data)))


def test_a_segmentation_run_registers_with_dice_and_its_cis(
    store: Store, segmentation, tmp_path: Path
) -> None:
    run_dir, pictures = segmentation
    card = register_run(store, run_dir, SEGMENTER, "1").card
    assert card["task"] == "segmentation" and card["classes"] == ["background", "foreground"]
    test = card["metrics"]["test"]["metrics"]
    assert {"dice", "iou", "sensitivity", "specificity", "auc", "hd95"} <= set(test)
    assert test["hd95"]["unit"] == "px" and "unit" not in test["dice"]  # PNG pictures: no spacing
    assert "acc" not in test and test["dice"]["ci95"][0] <= test["dice"]["value"] <= test["dice"]["ci95"][1]
    assert card["input"]["patch_size"] == [32, 32] and "mean Dice" in card["threshold"]["how_chosen"]
    assert "image/mask pairs" in card["limitations"][0]

    # `medsight predict` takes the registered name as it takes the run folder
    from typer.testing import CliRunner

    from medsight.cli import app as cli_app

    out = tmp_path / "masks.csv"
    done = CliRunner().invoke(
        cli_app, ["predict", SEGMENTER, str(pictures / "26_image.png"), "--out", str(out)]
    )
    assert done.exit_code == 0, done.output
    (row,) = csv.DictReader(out.open())
    assert row["status"] == "ok" and row["model"] == f"{SEGMENTER}:1" and Path(row["mask"]).is_file()


def test_the_segmentation_card_page_names_the_hd95_unit(seg_served) -> None:
    client, tokens = seg_served
    page = client.get(f"/api/models/{SEGMENTER}/card", headers=bearer(tokens["clinician"]))
    assert page.status_code == 200 and "<td>hd95 (px)</td>" in page.text and "<td>dice</td>" in page.text


@both_backends  # results with their images in result_images, and the SEG, on SQLite and PostgreSQL
def test_segmentation_served_as_mask_and_as_dicom_seg(
    seg_served, segmentation, store: Store, tmp_path
) -> None:
    client, tokens = seg_served
    token = tokens["clinician"]
    run_dir, pictures = segmentation
    png = pictures / "26_image.png"
    answer = _post(client, token, "26.png", png.read_bytes())
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["task"] == "segmentation" and body["model"] == {"name": SEGMENTER, "version": "1"}
    assert body["label"] == "foreground" and body["probabilities"] == [] and body["explain_method"] is None
    assert body["ecg"] is None and set(body["timing_ms"]) == {"preprocess", "inference", "explain"}
    seg = body["segmentation"]
    mask = _png(client.get(seg["mask_url"], headers=bearer(token)).content)
    # the CLI's mask for the same file: one segmentation path whichever door the file came through
    written = segment_file(run_dir, png, tmp_path / "cli")
    assert np.array_equal(mask, _png(written["mask"].read_bytes())) and set(np.unique(mask)) <= {0, 255}
    assert body["threshold"] == pytest.approx(written["threshold"])
    assert seg["shape"] == [146, 141] and seg["foreground_pixels"] == int((mask > 0).sum())
    assert seg["foreground_fraction"] == pytest.approx(written["foreground_share"])
    assert seg["area_mm2"] is None and seg["seg_sop_instance_uid"] is None  # a PNG: no spacing, no study
    overlay = _png(client.get(body["overlay_url"], headers=bearer(token)).content)
    probs = _png(client.get(body["heatmap_url"], headers=bearer(token)).content)
    assert overlay.shape == (146, 141, 3) and probs.shape == (146, 141)
    # the same access checks as any result: another clinician's request answers like a missing one
    assert client.get(seg["mask_url"], headers=bearer(tokens["clinician2"])).status_code == 404
    assert (
        client.get(body["id"].join(["/api/results/", "/strip.png"]), headers=bearer(token)).status_code == 404
    )

    # A DICOM: de-identified and stored, its mask a DICOM SEG in the same study, over DICOMweb
    dicom = _rgb_dicom(png, tmp_path / "fundus.dcm")
    answer = _post(client, token, "fundus.dcm", dicom.read_bytes())
    assert answer.status_code == 200, answer.text
    body = answer.json()
    seg = body["segmentation"]
    study, seg_uid = body["study_instance_uid"], seg["seg_sop_instance_uid"]
    assert study != pydicom.dcmread(dicom).StudyInstanceUID  # de-identified on the way in
    assert seg["area_mm2"] == pytest.approx(seg["foreground_pixels"] * 0.04 * 0.04)
    found = client.get(f"/dicomweb/studies/{study}/instances", headers=bearer(token)).json()
    by_sop = {i["00080018"]["Value"][0]: i for i in found}
    assert {body["sop_instance_uid"], seg_uid} <= set(by_sop)
    series = by_sop[seg_uid]["0020000E"]["Value"][0]
    # (pydicom: highdicom's reader wants a slice thickness, which a fundus photograph does not have)
    stored = pydicom.dcmread(io.BytesIO(_retrieve(client, token, study, series, seg_uid)))
    assert (
        stored.Modality == "SEG"
        and stored.StudyInstanceUID == study
        and stored.SOPClassUID == SegmentationStorage
    )
    assert stored.PatientID != "TEST-1"  # the pseudonym, copied from the stored source
    assert int(stored.pixel_array.sum()) == seg["foreground_pixels"] == int((mask > 0).sum())
    # the stored instance again, by its UID: the same mask, a second SEG in the same study
    again = client.post(
        "/api/predict", json={"instance": body["sop_instance_uid"], "model": SEGMENTER}, headers=bearer(token)
    )
    assert again.status_code == 200, again.text
    second = again.json()["segmentation"]
    assert (
        second["foreground_pixels"] == seg["foreground_pixels"] and second["seg_sop_instance_uid"] != seg_uid
    )
    history = client.get(f"/api/studies/{study}", headers=bearer(token)).json()
    assert [r["segmentation"]["seg_sop_instance_uid"] for r in history["results"]] == [
        second["seg_sop_instance_uid"],
        seg_uid,
    ]
    assert check_store(store).ok


def test_a_field_of_view_upload_bounds_a_served_mask(
    seg_served, segmentation, store: Store, tmp_path
) -> None:
    """The tiny model was trained inside DRIVE's field of view: with the FOV as 'roi' the mask is the CLI's
    with --roi and empty outside it; without one the answer says so; a bad ROI is refused like in training."""
    client, tokens = seg_served
    token, (run_dir, pictures) = tokens["clinician"], segmentation
    image, roi = pictures / "26_image.png", pictures / "26_roi.png"

    def post(roi_part: tuple[str, bytes] | None):  # noqa: ANN202
        files = [("file", ("26.png", image.read_bytes()))] + ([("roi", roi_part)] if roi_part else [])
        return client.post("/api/predict", files=files, data={"model": SEGMENTER}, headers=bearer(token))

    bounded = post(("fov.png", roi.read_bytes()))
    assert bounded.status_code == 200, bounded.text
    seg = bounded.json()["segmentation"]
    assert seg["roi_applied"] is True and seg["roi_note"] is None
    mask = _png(client.get(seg["mask_url"], headers=bearer(token)).content)
    written = segment_file(run_dir, image, tmp_path / "cli", roi_path=roi)
    assert np.array_equal(mask, _png(written["mask"].read_bytes()))
    fov = _png(roi.read_bytes()) > 0
    assert not mask[~fov].any() and mask[fov].any()

    whole = post(None).json()["segmentation"]
    assert whole["roi_applied"] is False and "no region of interest was given" in whole["roi_note"]
    assert not np.array_equal(_png(client.get(whole["mask_url"], headers=bearer(token)).content), mask)

    before = count_results(store)
    small = Image.open(roi).resize((70, 73), Image.NEAREST)
    refusals = [
        (png_of(small), "fov.png: the roi is 73 × 70 but its image 26.png is 146 × 141"),
        (image.read_bytes(), "fov.png: the roi is not binary"),
        (png_of(Image.new("L", (141, 146))), "fov.png: the roi is empty"),
        (b"not an image", "not a DICOM, PNG, JPEG or NIfTI"),
    ]
    for data, words in refusals:
        answer = post(("fov.png", data))
        assert answer.status_code in (400, 415) and words in answer.json()["error"], answer.text
    alone = client.post("/api/predict", files=[("roi", ("fov.png", roi.read_bytes()))], headers=bearer(token))
    assert alone.status_code == 400 and "beside the image" in alone.json()["error"]
    assert count_results(store) == before


def png_of(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "data", "status", "words"),
    [
        ("two.nii", two_channel_nifti(), 422, "2 channels"),
        ("huge.png", huge_png(), 413, "megapixels"),
        ("notes.txt", b"not an image at all", 415, "not a DICOM, PNG, JPEG or NIfTI"),
    ],
)
def test_segmentation_refusals_answer_4xx_and_store_nothing(
    seg_served, store, name, data, status, words
) -> None:
    client, tokens = seg_served
    answer = _post(client, tokens["clinician"], name, data)
    assert answer.status_code == status and words in answer.json()["error"]
    assert count_results(store) == 0


# -- ECG ------------------------------------------------------------------------------------------
