"""Segmentation and ECG models in service: registered with a card of their own metrics, and answering
``POST /api/predict`` with a mask (PNG, and a DICOM SEG in the study for a DICOM) or every beat of an
ECG record, through the same de-identification, storage, access checks and refusals as a classifier."""

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
    synthetic_test_png,
    tiny_ecg_run,
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
ECG_MODEL = "beats"


@pytest.fixture(scope="module")
def ecg_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_ecg_run(tmp_path_factory)


@pytest.fixture
def ecg_served(store: Store, ecg_run: Path) -> tuple[TestClient, dict[str, str]]:
    app, tokens = app_with_model(store, ecg_run)
    register_run(store, ecg_run, ECG_MODEL, "1", default=True, user="test")
    return TestClient(app), tokens


def _post_record(client: TestClient, token: str, parts: list[tuple[str, bytes]]):  # noqa: ANN202
    files = [("file", (name, data, "application/octet-stream")) for name, data in parts]
    return client.post("/api/predict", files=files, headers=bearer(token))


def _record_250hz(shared_data: Path, folder: Path) -> Path:
    """The first 60 s of record 100 written again at 250 Hz (format 16), with its beats."""
    import wfdb

    from medsight.io.ecg import open_ecg, read_beats, read_signal

    source = open_ecg(shared_data / "ecg" / "wfdb" / "100")
    signal = read_signal(source, fs=250, log=lambda _: None)[: 60 * 250]
    wfdb.wrsamp(
        "r250",
        fs=250,
        units=["mV"],
        sig_name=["MLII"],
        p_signal=signal[:, None].astype(np.float64),
        fmt=["16"],
        adc_gain=[200.0],
        baseline=[0],
        write_dir=str(folder),
    )
    beats = read_beats(source).samples
    positions = np.round(beats[beats < 59 * 360] * 250 / 360).astype(np.int64)
    wfdb.wrann("r250", "atr", positions, symbol=["N"] * len(positions), write_dir=str(folder))
    return folder / "r250"


def test_an_ecg_record_is_served_beat_by_beat(ecg_served, ecg_run, store: Store, shared_data: Path) -> None:
    from medsight.predict.ecg import classify_record
    from medsight.train.inference import load_trained_model

    client, tokens = ecg_served
    token = tokens["clinician"]
    card = client.get(f"/api/models/{ECG_MODEL}", headers=bearer(token)).json()["latest"]
    assert card["task"] == "ecg" and card["classes"] == ["other", "pvc"]
    record = shared_data / "ecg" / "wfdb" / "100"
    # the client's names are neither trusted nor used: the parts are told apart by their content
    parts = [(name, record.with_suffix(s).read_bytes()) for name, s in [("x.atr", ".dat"), ("../h", ".hea")]]
    answer = _post_record(client, token, [*parts, ("y.dat", record.with_suffix(".atr").read_bytes())])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["task"] == "ecg" and body["segmentation"] is None and body["heatmap_url"] is None
    ecg = body["ecg"]
    expected = classify_record(load_trained_model(ecg_run), record, log=lambda _: None)  # the CLI's path
    assert [b["sample"] for b in ecg["beats"]] == expected.beats.samples.tolist()
    np.testing.assert_allclose([b["probability"] for b in ecg["beats"]], expected.p_pvc, atol=1e-6)
    assert ecg["beats_from"] == "annotations" and ecg["sampling_rate_hz"] == 360 and ecg["notes"] == []
    assert ecg["counts"] == {"other": int((~expected.is_pvc).sum()), "pvc": int(expected.is_pvc.sum())}
    assert {b["reference"] for b in ecg["beats"]} == {"other", "pvc"}  # record 100 has one PVC
    assert body["label"] == ("pvc" if expected.is_pvc.any() else "other")
    assert body["source_format"] == "wfdb" and body["study_id"].startswith("upload-")
    strip = client.get(ecg["strip_url"], headers=bearer(token))
    assert strip.status_code == 200 and _png(strip.content).shape[1] > 500
    assert client.get(ecg["strip_url"], headers=bearer(tokens["clinician2"])).status_code == 404
    assert client.get(f"/api/results/{body['id']}", headers=bearer(token)).json()["ecg"] == ecg

    # the MIT-BIH npz copy of the same record, as one part: the same beats
    npz = _post_record(client, token, [("100", (shared_data / "ecg" / "mitdb" / "100.npz").read_bytes())])
    assert npz.status_code == 200, npz.text
    assert npz.json()["source_format"] == "npz" and npz.json()["ecg"]["beats"] == ecg["beats"]


def test_ecg_refusals_and_a_record_at_another_rate(
    ecg_served, store: Store, shared_data: Path, tmp_path
) -> None:
    client, tokens = ecg_served
    token = tokens["clinician"]
    record = shared_data / "ecg" / "wfdb" / "100"
    header, signal = record.with_suffix(".hea").read_bytes(), record.with_suffix(".dat").read_bytes()
    refusals = [
        ([("100.hea", header)], 400, "signal file (NAME.dat) is missing"),
        ([("100.hea", header), ("100.dat", b"")], 400, "a part of the record: the file is empty"),
        ([("100.hea", header), ("100.dat", signal[:-10])], 400, "no part holds the signal file 100.dat"),
        ([("100.dat", signal)], 415, "not an ECG record"),
        ([("scan.png", synthetic_test_png())], 415, "not an ECG record"),
        ([("a.hea", header), ("b.dat", signal), ("c.atr", b"\x89PNG not annotations")], 400, "neither"),
    ]
    for parts, status, words in refusals:
        answer = _post_record(client, token, parts)
        assert answer.status_code == status and words in answer.json()["error"], (words, answer.text)
        assert "/tmp" not in answer.json()["error"]
    assert count_results(store) == 0

    slow = _record_250hz(shared_data, tmp_path)
    parts = [(f"part{i}", slow.with_suffix(s).read_bytes()) for i, s in enumerate((".hea", ".dat", ".atr"))]
    answer = _post_record(client, token, parts)
    assert answer.status_code == 200, answer.text
    ecg = answer.json()["ecg"]
    assert ecg["record_sampling_rate_hz"] == 250 and ecg["sampling_rate_hz"] == 360
    assert any("resampled to 360 Hz" in note for note in ecg["notes"])
    strip = client.get(ecg["strip_url"], headers=bearer(token))  # drawn at the record's own 250 Hz
    assert strip.status_code == 200 and _png(strip.content).shape[1] > 500
    assert abs(len(ecg["beats"]) - 70) < 15  # about a minute of beats, at the model's rate


def _zipped(members: list[tuple[str, bytes]]) -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def test_an_ecg_record_zip_is_served_and_bad_zips_are_refused(
    ecg_served, store: Store, shared_data: Path
) -> None:
    client, tokens = ecg_served
    token = tokens["clinician"]
    record = shared_data / "ecg" / "wfdb" / "100"
    files = {s: record.with_suffix(s).read_bytes() for s in (".hea", ".dat", ".atr")}
    as_parts = _post_record(client, token, [(f"100{s}", data) for s, data in files.items()])
    assert as_parts.status_code == 200, as_parts.text
    # a member named to climb out of any folder is harmless: members are read in memory, never extracted
    members = [
        ("../../up/100.hea", files[".hea"]),
        ("100/100.dat", files[".dat"]),
        ("100.atr", files[".atr"]),
    ]
    macos = [("__MACOSX/._100.hea", b"\x00\x05\x16\x07junk"), (".DS_Store", b"\x00\x00\x00\x01Bud1")]
    readme = [("README.txt", b"MIT-BIH record 100\n")]
    answer = _post_record(client, token, [("record.zip", _zipped(members + macos + readme))])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["source_format"] == "wfdb" and body["ecg"]["beats"] == as_parts.json()["ecg"]["beats"]
    assert body["ecg"]["beats_from"] == "annotations"
    assert body["ecg"]["notes"] == [
        "1 file(s) in the zip are not part of the record (header, signal, beats) and were left out."
    ]

    before = count_results(store)
    second = files[".hea"].replace(b"100 ", b"101 ", 1)
    bomb = _zipped([("100.hea", files[".hea"]), ("100.dat", bytes(70 * 2**20))])  # ~70 KiB -> 70 MiB
    refusals = [
        (_zipped(members + [("101.hea", second)]), 400, "2 WFDB headers"),
        (_zipped(readme + macos), 400, "the zip holds 1 files and no WFDB header"),
        (_zipped([("100.hea", files[".hea"])]), 400, "signal file (NAME.dat) is missing"),
        (_zipped([(f"{i}.txt", b"x") for i in range(40)]), 400, "holds 40 entries"),
        (bomb, 413, "the zip unpacks to more than"),
        (_zipped(members)[:-30], 400, "the zip archive is damaged"),
    ]
    for data, status, words in refusals:
        refused = _post_record(client, token, [("record.zip", data)])
        assert refused.status_code == status and words in refused.json()["error"], (words, refused.text)
    assert count_results(store) == before
