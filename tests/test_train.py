"""The training engine and the run folder contract, on real (small) training runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from medsight.data.registry import load_dataset
from medsight.errors import ConfigError, DataNotFoundError
from medsight.train import engine
from medsight.train.config import TrainConfig
from medsight.train.defaults import fingerprint, resolve
from medsight.train.engine import fit
from medsight.workflows import train_and_evaluate

# small inputs and a narrow network keep the suite quick on 2 cores
FAST = {"image_size": 32, "bootstrap": 200, "model_options": {"widths": [8, 16, 32]}}


def synthetic_config(**overrides) -> TrainConfig:
    return TrainConfig(dataset="synthetic", **{**FAST, "epochs": 2, **overrides})


def test_run_folder_contract(tmp_path):
    run = tmp_path / "run"
    metrics = train_and_evaluate(synthetic_config(epochs=3), run, log=lambda _: None)

    for name in (
        "config.yaml",
        "checkpoint.pt",
        "metrics.json",
        "report.html",
        "run.json",
        "predictions.npz",
    ):
        assert (run / name).is_file(), name
    for plot in ("training_curves", "roc", "pr", "confusion", "calibration", "examples"):
        assert (run / "plots" / f"{plot}.png").stat().st_size > 1000, plot
    assert json.loads((run / "run.json").read_text())["status"] == "complete"

    on_disk = json.loads((run / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    test = on_disk["test"]
    for key in ("auc", "acc", "acc_at_0_5", "sensitivity", "specificity", "f1", "threshold"):
        assert isinstance(test[key], float), key
    assert test["threshold"] == on_disk["threshold"] == on_disk["val"]["threshold"]
    assert test["auc"] > 0.8, "the lesion phantoms are easy: a working engine separates them"
    assert test["ci"]["auc"][0] <= test["auc"] <= test["ci"]["auc"][1]

    recorded = yaml.safe_load((run / "config.yaml").read_text())
    assert recorded["config"]["epochs"] == 3 and recorded["config"]["lr"] is not None
    assert recorded["config"]["augment"] in ("light", "standard", "strong")
    assert recorded["versions"]["torch"].startswith("2.13")
    assert recorded["fingerprint"]["n_train"] == 1200

    html = (run / "report.html").read_text()
    assert "data:image/png;base64," in html and "http://" not in html and "https://" not in html


def test_resume_continues_exactly(tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    fit(synthetic_config(epochs=3), straight, log=lambda _: None)

    interrupted = tmp_path / "interrupted"
    original = engine.Trainer.train_epoch

    def stop_in_second_epoch(self, epoch, on_step):
        if epoch == 1:
            raise KeyboardInterrupt
        return original(self, epoch, on_step)

    monkeypatch.setattr(engine.Trainer, "train_epoch", stop_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        fit(synthetic_config(epochs=3), interrupted, log=lambda _: None)
    assert json.loads((interrupted / "run.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(engine.Trainer, "train_epoch", original)

    fit(TrainConfig(dataset="ignored on resume"), interrupted, resume=True, log=lambda _: None)
    a = torch.load(straight / "checkpoint.pt", weights_only=False)
    b = torch.load(interrupted / "checkpoint.pt", weights_only=False)
    assert a["epoch"] == b["epoch"] == 3
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
    assert [h["val_auc"] for h in a["history"]] == [h["val_auc"] for h in b["history"]]


def test_failed_run_is_marked_failed(tmp_path):
    run = tmp_path / "run"
    # DenseNet-121 pools its way to nothing on 8-pixel images: a failure inside training
    with pytest.raises(RuntimeError):
        fit(
            synthetic_config(model="densenet121", image_size=8, epochs=1, model_options={}),
            run,
            log=lambda _: None,
        )
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "failed" and "RuntimeError" in status["error"]
    assert not (run / "metrics.json").exists()


def test_missing_dataset_writes_nothing(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(DataNotFoundError, match="medsight data import"):
        fit(TrainConfig(dataset="no-such-set"), run, log=lambda _: None)
    assert not run.exists()


def test_existing_run_is_not_overwritten(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("keep me")
    with pytest.raises(ConfigError, match="--resume"):
        fit(synthetic_config(), run, log=lambda _: None)
    assert (run / "config.yaml").read_text() == "keep me"


def test_time_budget_sizes_the_schedule(tmp_path):
    run = tmp_path / "run"
    fit(TrainConfig(dataset="synthetic", time_budget_min=0.05, **FAST), run, log=lambda _: None)
    recorded = yaml.safe_load((run / "config.yaml").read_text())["config"]
    unbounded = resolve(TrainConfig(dataset="synthetic", **FAST), fingerprint(load_dataset("synthetic")))
    # three seconds cannot hold the epochs the data alone would ask for: the budget cut the schedule
    assert 1 <= recorded["epochs"] < unbounded.epochs
    assert json.loads((run / "run.json").read_text())["epochs_trained"] <= recorded["epochs"]


def _write_three_class_folder(root, n_per_class=40):
    rng = np.random.default_rng(0)
    for k, name in enumerate(["circle", "square", "blank"]):
        (root / name).mkdir(parents=True)
        for i in range(n_per_class):
            image = rng.normal(80, 10, (24, 24))
            if name == "circle":
                yy, xx = np.mgrid[:24, :24]
                image[(yy - 12) ** 2 + (xx - 12) ** 2 < 30] += 90
            elif name == "square":
                image[7:17, 7:17] += 90
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / name / f"{k}_{i}.png")


def test_multiclass_on_an_imported_folder(tmp_path, run_cli):
    folder = tmp_path / "shapes"
    _write_three_class_folder(folder)
    assert run_cli("data", "import", str(folder), "--name", "shapes").returncode == 0
    run, fast = tmp_path / "run", tmp_path / "fast.yaml"
    fast.write_text(yaml.safe_dump({"bootstrap": 200, "model_options": {"widths": [8, 16, 32]}}))
    result = run_cli(
        "train", "--dataset", "shapes", "--epochs", "15", "--out", str(run), "--config", str(fast)
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["test"]["confusion_matrix"]) == 3
    assert metrics["threshold"] is None and metrics["test"]["acc"] > 0.6


def test_config_errors_name_the_key(tmp_path, run_cli):
    config = tmp_path / "bad.yaml"
    config.write_text("dataset: synthetic\nlearning_rate: 0.1\n")
    result = run_cli("train", "--config", str(config), "--out", str(tmp_path / "run"))
    assert result.returncode != 0
    assert "learning_rate" in result.stderr and "lr" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_evaluate_command_on_another_split(tmp_path, run_cli):
    run = tmp_path / "run"
    train_and_evaluate(synthetic_config(epochs=1), run, log=lambda _: None)
    result = run_cli("evaluate", str(run), "--split", "val")
    assert result.returncode == 0, result.stderr
    assert "val: AUC" in result.stdout
    missing = run_cli("evaluate", str(tmp_path / "nope"))
    assert missing.returncode != 0 and "no such run folder" in missing.stderr


@pytest.mark.slow
def test_pneumoniamnist_learns_in_a_minute(tmp_path):
    """Real data, real engine, defaults: a one-minute budget already separates the classes well."""
    metrics = train_and_evaluate(
        TrainConfig(dataset="pneumoniamnist", time_budget_min=1.0, bootstrap=200),
        tmp_path / "run",
        log=lambda _: None,
    )
    assert metrics["test"]["auc"] > 0.9


@pytest.mark.slow
def test_adrenalmnist3d_trains_in_3d(tmp_path):
    metrics = train_and_evaluate(
        TrainConfig(dataset="adrenalmnist3d", epochs=2, bootstrap=200), tmp_path / "run", log=lambda _: None
    )
    recorded = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert recorded["fingerprint"]["spatial_dims"] == 3
    assert metrics["test"]["auc"] > 0.6


def test_loader_workers_are_forked_only_after_garbage_is_freed(tmp_path):
    """An ONNX Runtime session left in a reference cycle was once freed inside a forked loader worker,
    where its thread pool does not exist, and the worker hung for good: the parent frees it first."""
    import gc
    import weakref

    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    class Holder:  # a cycle: only the garbage collector can free what it holds
        pass

    holder = Holder()
    holder.itself, holder.session = holder, ort.InferenceSession(model.SerializeToString())
    freed = weakref.ref(holder)
    del holder
    gc.disable()  # no automatic collection: only a deliberate one frees the cycle
    try:
        assert freed() is not None
        fit(synthetic_config(epochs=1, num_workers=1, augment="light"), tmp_path / "run", log=lambda _: None)
        assert freed() is None
    finally:
        gc.enable()
