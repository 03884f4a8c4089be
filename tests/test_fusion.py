"""Tabular columns beside images, feature and late fusion, multi-task heads, fusion export.

Images are real (PneumoniaMNIST chest X-rays); the tabular columns are made up with a known link to
the label (age) and known gaps (missing values), so that what the import does can be checked.
Runs are trained once per module, for 1 epoch on 80 images with a narrow network.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from medsight.cli import app as cli_app
from medsight.data.dataset import ImageDataset, Split
from medsight.data.ecg_rr import RATIO_CHANNELS, rr_columns
from medsight.data.importer import import_dataset
from medsight.data.registry import load_dataset, registry_dir
from medsight.data.tabular import fit_tabular
from medsight.errors import BadInputError, ConfigError
from medsight.optimize.common import OptimizeError
from medsight.optimize.ensemble import load_servable, make_ensemble
from medsight.optimize.export import export_run
from medsight.optimize.predictors import load_variant
from medsight.optimize.variants import optimize_run
from medsight.predict.predictor import Predictor
from medsight.train.config import TrainConfig
from medsight.train.defaults import fingerprint, resolve
from medsight.train.inference import load_trained_model
from medsight.train.tasks.classification import Classification
from medsight.workflows import train_and_evaluate

SHARED_DATA = Path(os.environ.get("MEDSIGHT_DATA") or Path(__file__).parents[2] / "shared" / "data").resolve()
HEADER = ["path", "label", "smoker", "age", "sex", "lab", "patient_id"]
FAST = {
    "epochs": 1,
    "bootstrap": 100,
    "augment": "none",
    "num_workers": 0,
    "image_size": 16,
}
NARROW = {"widths": [8, 16]}


def write_manifest(folder: Path, n_per_class: int = 40, **overrides: dict[int, str]) -> Path:
    """PNGs of real chest X-rays + a CSV with label, a second label and tabular columns.

    Age depends on the label; every 9th age and every 11th sex is missing. ``overrides`` replace
    cells: ``{"age": {3: "abc"}}`` puts "abc" in the age of image 3.
    """
    with np.load(SHARED_DATA / "medmnist" / "pneumoniamnist.npz") as npz:
        labels = npz["train_labels"].ravel()
        pick = np.concatenate([np.flatnonzero(labels == c)[:n_per_class] for c in (0, 1)])
        images, labels = npz["train_images"][pick], labels[pick]
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, (image, label) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray(image).save(folder / f"img{k:03d}.png")
        cells = {
            "path": f"img{k:03d}.png",
            "label": ["normal", "pneumonia"][label],
            "smoker": "yes" if (label == 1) ^ (k % 4 == 0) else "no",
            "age": "" if k % 9 == 0 else f"{30 + 25 * label + rng.normal(0, 6):.1f}",
            "sex": "NA" if k % 11 == 0 else ["F", "M"][k % 2],
            "lab": f"{rng.normal(1.0, 0.2):.3f}",
            "patient_id": f"P{k // 2:03d}",
        }
        for column, changes in overrides.items():
            cells[column] = changes.get(k, cells[column])
        rows.append([cells[c] for c in HEADER])
    manifest = folder / "manifest.csv"
    with open(manifest, "w", newline="") as handle:
        csv.writer(handle).writerows([HEADER, *rows])
    return manifest


def import_tabular(manifest: Path, name: str = "chest-tab", **options):
    options = {"tabular": ["age", "sex", "lab"], "categorical": ["sex"], **options}
    return import_dataset(manifest, registry_dir(), name=name, **options)


@pytest.fixture(scope="module")
def fusion_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A MEDSIGHT_HOME with the imported sets, and feature, late and multi-task runs trained in it."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data folder {SHARED_DATA} is missing (see DESIGN.md).", pytrace=False)
    root = tmp_path_factory.mktemp("fusion")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDSIGHT_HOME", str(root / "home"))
        patch.setenv("MEDSIGHT_DATA", str(SHARED_DATA))
        manifest = write_manifest(root / "scans")
        import_tabular(manifest)
        import_tabular(manifest, "chest-two", labels=["label", "smoker"])
        runs = {"home": root / "home"}
        for name, dataset, options in (
            ("feature", "chest-tab", {"fusion": "feature", **NARROW}),
            ("late", "chest-tab", {"fusion": "late", **NARROW}),
            ("heads", "chest-two", {"fusion": "none", **NARROW}),
        ):
            config = TrainConfig(dataset=dataset, model_options=options, **FAST)
            train_and_evaluate(config, root / name, explain=False, log=lambda _: None)
            runs[name] = root / name
        return runs


# --------------------------------------------------------------------------- import


def test_manifest_with_tabular_columns_imports_by_cli(tmp_path):
    manifest = write_manifest(tmp_path / "scans", n_per_class=20)
    arguments = ["data", "import", str(manifest), "--name", "chest-cli", "--tabular", "age,sex,lab"]
    result = CliRunner().invoke(cli_app, [*arguments, "--categorical", "sex"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    # every imputation is said, never silent
    assert "note: age: 5 of 40 value(s) missing, imputed with the training mean" in result.output
    assert "note: sex: 4 of 40 value(s) missing, imputed with no category" in result.output
    assert "tabular features (6): age, age missing, sex=F, sex=M, sex missing, lab" in result.output
    dataset = load_dataset("chest-cli")
    for split in dataset.splits.values():
        assert split.tabular.shape == (len(split), 6) and split.tabular.dtype == np.float32
    # a missing age is the training mean (0 once standardised) and flagged
    rows = np.concatenate([s.tabular for s in dataset.splits.values()])
    flagged = rows[:, 1] == 1
    assert flagged.sum() == 5 and np.all(rows[flagged, 0] == 0)
    assert np.all(rows[rows[:, 4] == 1][:, 2:4] == 0)  # a missing sex is no category


def test_standardisation_uses_training_statistics_only():
    raw = {"age": ["10", "20", "30", "", "1000", "2000"], "sex": ["F", "M", "F", "M", "X", ""]}
    train = np.array([True, True, True, True, False, False])
    spec, features, notes = fit_tabular(
        raw, {"age": "numeric", "sex": "categorical"}, train, [f"row {k}" for k in range(6)]
    )
    age = spec.columns[0]
    assert (age.mean, round(age.std, 4)) == (20.0, round(np.std([10, 20, 30]), 4))  # test rows unseen
    assert spec.columns[1].categories == ["F", "M"]  # "X" appears in test only
    assert spec.names == ["age", "age missing", "sex=F", "sex=M", "sex missing"]
    np.testing.assert_allclose(features[:3, 0].mean(), 0, atol=1e-6)
    np.testing.assert_allclose(features[4, 0], (1000 - 20) / age.std, rtol=1e-5)
    assert features[4, 2:].tolist() == [0, 0, 0]  # unseen category: none, and not "missing"
    assert any("not among the training categories" in note for note in notes)


def test_imported_features_are_standardised_on_the_training_split(fusion_runs, monkeypatch):
    monkeypatch.setenv("MEDSIGHT_HOME", str(fusion_runs["home"]))
    dataset = load_dataset("chest-tab")
    age = dataset.tabular_spec.columns[0]
    train = dataset.splits["train"].tabular
    present = train[:, 1] == 0
    assert abs(train[present, 0].mean()) < 1e-5 and abs(train[present, 0].std() - 1) < 1e-4
    assert age.std > 1  # ages in years: the features are not the raw values
    assert dataset.info()["tabular"] == dataset.tabular_names


def test_rr_features_of_ecg_beats_follow_each_record():
    channels = ["ecg", "ecg minus record median beat", *RATIO_CHANNELS]
    images = np.zeros((5, 5, 8), dtype=np.float32)
    images[:, 2] = 0.5  # RR before / local RR, constant in time as data/ecg.py makes it
    split = Split(images, np.zeros(5, dtype=np.int64), np.array(["a", "a", "a", "b", "b"]))
    samples = np.array([100, 460, 640, 50, 410])  # at 360 Hz: a: 1 s then 0.5 s; b: 1 s
    table = rr_columns(split, samples, 360.0, channels)
    np.testing.assert_allclose(table[:, 0], [1.0, 1.0, 0.5, 1.0, 1.0])  # first beat borrows its next RR
    np.testing.assert_allclose(table[:, 1], [1.0, 0.5, 0.5, 1.0, 1.0])  # last beat borrows its previous
    np.testing.assert_allclose(table[:, 2], table[:, 0] / 0.5)  # local RR = RR before / its ratio


# --------------------------------------------------------------------------- training


@pytest.mark.parametrize("mode", ["feature", "late"])
def test_fusion_trains_evaluates_and_reads_the_tabular_side(fusion_runs, monkeypatch, mode):
    monkeypatch.setenv("MEDSIGHT_HOME", str(fusion_runs["home"]))
    run = fusion_runs[mode]
    config = yaml.safe_load((run / "config.yaml").read_text())["config"]
    assert config["model"] == "fusion" and config["model_options"]["fusion"] == mode
    assert config["model_options"]["backbone"] == "compact-resnet"
    assert config["model_options"]["tabular_features"] == 6
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["auc"] is not None and metrics["test"]["ci"]["auc"] is not None
    trained = load_trained_model(run)
    test = load_dataset("chest-tab").splits["test"]
    probs = trained.predict_images(test.images, tabular=test.tabular)
    shifted = trained.predict_images(test.images, tabular=test.tabular + 3.0)
    assert np.abs(probs - shifted).max() > 1e-3  # the tabular input reaches the output
    with pytest.raises(BadInputError, match="also reads tabular features"):
        trained.predict_images(test.images)
    bound = trained.with_tabular(test.tabular[0])  # Grad-CAM's view: one patient's values fixed
    np.testing.assert_allclose(bound.predict_images(test.images[:1]), probs[:1], atol=1e-6)


def test_an_ensemble_of_fusion_runs_gives_each_member_its_table(fusion_runs, monkeypatch, tmp_path):
    monkeypatch.setenv("MEDSIGHT_HOME", str(fusion_runs["home"]))
    members = [fusion_runs["feature"], fusion_runs["late"]]
    metrics = make_ensemble(members, tmp_path / "ensemble", n_boot=50, log=lambda _: None)
    assert metrics["test"]["auc"] is not None
    test = load_dataset("chest-tab").splits["test"]
    by_hand = np.mean(
        [load_trained_model(m).predict_images(test.images, tabular=test.tabular) for m in members], 0
    )
    ensembled = load_servable(tmp_path / "ensemble").predict_images(test.images, tabular=test.tabular)
    np.testing.assert_allclose(ensembled, by_hand, atol=1e-6)


def test_multitask_heads_train_and_evaluate_per_label(fusion_runs):
    run = fusion_runs["heads"]
    config = yaml.safe_load((run / "config.yaml").read_text())["config"]
    assert config["model_options"]["heads"] == [2, 2] and config["model_options"]["fusion"] == "none"
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["heads"]) == {"label", "smoker"}
    for head in metrics["heads"].values():
        assert head["classes"] and head["threshold"] is not None
        assert head["test"]["auc"] is not None and head["test"]["ci"]["auc"] is not None
        assert head["val"]["n"] == metrics["val"]["n"]
    assert metrics["test"]["auc"] == metrics["heads"]["label"]["test"]["auc"]  # first label heads the report


def test_plain_data_sets_take_the_plain_path():
    dataset = load_dataset("synthetic")
    config = TrainConfig(dataset="synthetic")
    assert Classification.resolve(config, dataset)[0] == resolve(config, fingerprint(dataset))
    with pytest.raises(ConfigError, match="needs tabular features"):
        Classification.resolve(TrainConfig(dataset="synthetic", model_options={"fusion": "late"}), dataset)


# --------------------------------------------------------------------------- serving and export


def test_served_prediction_encodes_the_patients_values_and_explains_the_image(fusion_runs, monkeypatch):
    monkeypatch.setenv("MEDSIGHT_HOME", str(fusion_runs["home"]))
    predictor = Predictor()
    model = predictor.model("chest", "1", fusion_runs["feature"])
    png = (fusion_runs["home"].parent / "scans" / "img000.png").read_bytes()
    with pytest.raises(BadInputError, match="also reads the patient's age, sex, lab"):
        predictor.predict_file(png, "img000.png", model)
    with pytest.raises(BadInputError, match="tabular values missing for lab"):
        predictor.predict_file(png, "img000.png", model, tabular={"age": "50", "sex": "F"})
    values = {"age": "", "sex": "F", "lab": "1.1"}
    result = predictor.predict_file(png, "img000.png", model, tabular=values)
    assert result.notes and result.notes[0].startswith("age: 1 of 1 value(s) missing, imputed")
    assert result.heatmap.shape == (28, 28) and result.heatmap.max() == pytest.approx(1.0)
    row, _ = load_trained_model(fusion_runs["feature"]).tabular.encode_row(values)
    image = np.array(Image.open(fusion_runs["home"].parent / "scans" / "img000.png"))[None, None]
    expected = load_trained_model(fusion_runs["feature"]).predict_images(image, tabular=row)[0]
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-5)


def test_onnx_export_of_a_fusion_model_matches_eager(fusion_runs, monkeypatch):
    monkeypatch.setenv("MEDSIGHT_HOME", str(fusion_runs["home"]))
    run = fusion_runs["late"]
    export_run(run, "onnx", log=lambda _: None)
    check = json.loads((run / "exports" / "model.onnx.check.json").read_text())
    assert check["passed"] and check["max_abs_prob_diff"] <= 1e-4
    spec = json.loads((run / "exports" / "input_spec.json").read_text())
    assert spec["tabular_features"][:2] == ["age", "age missing"]
    test = load_dataset("chest-tab").splits["test"]
    onnx_probs = load_variant(run, "onnx-fp32").predict_images(test.images, tabular=test.tabular)
    eager = load_trained_model(run).predict_images(test.images, tabular=test.tabular)
    assert np.abs(onnx_probs - eager).max() <= 1e-4


def test_steps_not_made_for_fusion_yet_refuse_clearly(fusion_runs, monkeypatch):
    monkeypatch.setenv("MEDSIGHT_HOME", str(fusion_runs["home"]))
    with pytest.raises(OptimizeError, match="reads tabular features; quantization"):
        optimize_run(fusion_runs["feature"], prune=0.5, log=lambda _: None)
    with pytest.raises(ConfigError, match="several labels"):
        export_run(fusion_runs["heads"], "onnx", log=lambda _: None)
    assert not (fusion_runs["feature"] / "variants").exists()


# --------------------------------------------------------------------------- bad input


def test_declared_column_missing_from_the_csv_is_refused(tmp_path):
    manifest = write_manifest(tmp_path / "scans", n_per_class=6)
    with pytest.raises(BadInputError, match="no 'creatinine' column"):
        import_tabular(manifest, tabular=["age", "creatinine"], categorical=[])
    with pytest.raises(BadInputError, match="'sex' is categorical but not tabular"):
        import_tabular(manifest, tabular=["age"])
    assert not any(registry_dir().iterdir())


def test_text_in_a_numeric_column_names_the_row(tmp_path):
    manifest = write_manifest(tmp_path / "scans", n_per_class=6, age={3: "fifty"})
    with pytest.raises(BadInputError) as err:
        import_tabular(manifest)
    message = str(err.value)
    assert "row 5" in message and "'age' is numeric" in message and "fifty" in message
    assert not any(registry_dir().iterdir())


def test_fusion_without_tabular_data_and_unknown_mode_are_refused():
    dataset: ImageDataset = load_dataset("synthetic")
    with pytest.raises(ConfigError, match="needs tabular features"):
        Classification.resolve(TrainConfig(dataset="synthetic", model="fusion"), dataset)
    with pytest.raises(ConfigError, match="does not take embeding"):
        Classification.resolve(
            TrainConfig(dataset="synthetic", model="fusion", model_options={"embeding": 8}), dataset
        )
    with pytest.raises(ConfigError, match="choose one of feature, late, none"):
        Classification.resolve(TrainConfig(dataset="synthetic", model_options={"fusion": "early"}), dataset)
