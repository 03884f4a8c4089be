"""ECG beat models in service: registered with a card of their own, and answering ``POST /api/predict``
with every beat of an uploaded record (WFDB parts, a .zip of them, or an MIT-BIH npz), through the same
de-identification, storage, access checks and refusals as a classifier."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from predict_helpers import (
    app_with_model,
    bearer,
    synthetic_test_png,
    tiny_ecg_run,
)
from test_served_tasks import _png

from medsight.predict.registration import register_run
from medsight.store import Store
from medsight.store.results import count_results

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


def test_an_ensemble_of_beat_models_serves_a_record(
    store: Store, ecg_run, shared_data, tmp_path, monkeypatch
):
    from test_ecg import TINY_RECORDS

    from medsight.optimize.ensemble import make_ensemble
    from medsight.predict.ecg import classify_record
    from medsight.train.inference import load_trained_model

    data = tmp_path / "data" / "ecg" / "mitdb"  # the records the run was trained on, to evaluate the ensemble
    data.mkdir(parents=True)
    for record in TINY_RECORDS:
        (data / f"{record}.npz").symlink_to(shared_data / "ecg" / "mitdb" / f"{record}.npz")
    monkeypatch.setenv("MEDSIGHT_DATA", str(tmp_path / "data"))
    ensemble = tmp_path / "ensemble"
    metrics = make_ensemble([ecg_run, ecg_run], ensemble, n_boot=50, log=lambda _: None)
    app, tokens = app_with_model(store, ensemble)
    client = TestClient(app)
    record = shared_data / "ecg" / "mitdb" / "100.npz"
    answer = _post_record(client, tokens["clinician"], [("100", record.read_bytes())])
    assert answer.status_code == 200, answer.text
    ecg = answer.json()["ecg"]
    run_alone = classify_record(load_trained_model(ecg_run), record, log=lambda _: None)
    np.testing.assert_allclose([b["probability"] for b in ecg["beats"]], run_alone.p_pvc, atol=1e-5)
    assert answer.json()["threshold"] == pytest.approx(metrics["threshold"])  # the ensemble's own
