"""The operating threshold from out-of-fold predictions over whole training and validation patients
(``medsight/train/record_folds.py``), on real MIT-BIH records with a tiny 1D CNN."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medsight.data.registry import load_dataset
from medsight.evaluate.metrics import choose_threshold
from medsight.evaluate.run import evaluate_run
from medsight.train.config import TrainConfig
from medsight.train.engine import fit
from medsight.train.record_folds import FOLDS, fold_dataset, held_out_patients, read_pool

# the seven shortest records: mitdb-pvc splits them 3 train, 2 validation, 2 test
SEVEN_RECORDS = ("102", "106", "108", "114", "119", "121", "123")
TINY = {
    "epochs": 1,
    "bootstrap": 0,
    "threshold_rule": "f1",
    "model_options": {"widths": [8, 16], "kernel": 5},
}


def data_folder(shared_data: Path, tmp_path: Path, records: tuple[str, ...]) -> Path:
    folder = tmp_path / "data" / "ecg" / "mitdb"
    folder.mkdir(parents=True)
    for record in records:
        (folder / f"{record}.npz").symlink_to(shared_data / "ecg" / "mitdb" / f"{record}.npz")
    return tmp_path / "data"


@pytest.fixture
def seven_records(shared_data, tmp_path, monkeypatch) -> Path:
    folder = data_folder(shared_data, tmp_path, SEVEN_RECORDS)
    monkeypatch.setenv("MEDSIGHT_DATA", str(folder))
    return folder


def patients(split) -> set[str]:
    return set(split.patient_ids.astype(str))


def test_every_training_and_validation_patient_is_held_out_once_and_never_trained_on(seven_records):
    dataset = load_dataset("mitdb-pvc")
    held_out_seen: list[str] = []
    for held_out in held_out_patients(dataset):
        fold = fold_dataset(dataset, held_out)
        assert patients(fold.splits["test"]) == held_out
        assert not held_out & (patients(fold.splits["train"]) | patients(fold.splits["val"]))
        assert patients(fold.splits["val"]) and patients(fold.splits["train"])  # each fold can train
        assert patients(fold.splits["train"]) <= patients(dataset.splits["train"])  # roles kept
        held_out_seen += sorted(held_out)
    pool = patients(dataset.splits["train"]) | patients(dataset.splits["val"])
    assert sorted(held_out_seen) == sorted(pool)  # each exactly once; test patients never


def test_threshold_is_chosen_on_the_pooled_out_of_fold_predictions(seven_records, tmp_path):
    run = tmp_path / "run"
    lines: list[str] = []
    fit(TrainConfig(dataset="mitdb-pvc", threshold_pool="record-folds", **TINY), run, log=lines.append)
    pool = read_pool(run)
    dataset = load_dataset("mitdb-pvc")
    held_out = [fold_dataset(dataset, patients).splits["test"] for patients in held_out_patients(dataset)]
    # every beat of the training and validation patients, once, in the fold that held its patient out
    assert len(pool["labels"]) == len(dataset.splits["train"]) + len(dataset.splits["val"])
    np.testing.assert_array_equal(pool["labels"], np.concatenate([s.labels for s in held_out]))
    np.testing.assert_array_equal(np.bincount(pool["fold"]), [len(s) for s in held_out])
    assert ((pool["probs"] > 0) & (pool["probs"] < 1)).all() and int(pool["patients"]) == 5
    fold_lines = [line for line in lines if line.startswith("threshold pool: fold")]
    assert len(fold_lines) == FOLDS and "patients held out" in fold_lines[0]
    assert not any(record in line for line in fold_lines for record in SEVEN_RECORDS)  # ids stay out of logs

    metrics = evaluate_run(run, "test", log=lambda _: None)
    assert metrics["threshold"] == choose_threshold(pool["labels"], pool["probs"], "f1")
    summary = metrics["threshold_pool"]
    assert summary["cases"] == len(pool["labels"]) and summary["patients"] == 5 and summary["folds"] == FOLDS
    assert summary["positives"] == int(pool["labels"].sum()) > 0
    assert "out-of-fold" in metrics["threshold_rule"]
    assert json.loads((run / "metrics.json").read_text())["threshold_pool"] == summary
    assert metrics["ecg"]["threshold"] == metrics["threshold"]
    assert (
        "out-of-fold predictions of the training and validation patients" in (run / "report.html").read_text()
    )


def test_too_few_patients_for_folds_falls_back_to_validation_and_says_why(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSIGHT_DATA", str(data_folder(shared_data, tmp_path, ("116", "119", "200"))))
    run = tmp_path / "run"
    lines: list[str] = []
    fit(TrainConfig(dataset="mitdb-pvc", threshold_pool="record-folds", **TINY), run, log=lines.append)
    assert read_pool(run) is None
    assert any("no out-of-fold pool" in line and "at least 3 training" in line for line in lines)
    metrics = evaluate_run(run, "val", log=lambda _: None)
    assert "threshold_pool" not in metrics and "validation split only" in metrics["threshold_rule"]
