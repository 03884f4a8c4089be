"""Export parity, int8, pruning, low rank, bench and ensembles on tiny runs trained once per module."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml
from torch import nn

from medsight.data.prepare import InputSpec, prepare_images
from medsight.data.registry import load_dataset
from medsight.errors import BadInputError, ConfigError, DataNotFoundError
from medsight.models import build_model
from medsight.optimize import compress, export
from medsight.optimize.bench import Timing, bench_run
from medsight.optimize.common import OptimizeError
from medsight.optimize.ensemble import load_ensemble, load_servable, make_ensemble
from medsight.optimize.export import export_run
from medsight.optimize.predictors import (
    OnnxPredictor,
    TorchScriptPredictor,
    load_serving_model,
    load_variant,
    predict,
)
from medsight.optimize.quantize import choose_method, quantize_dynamic_int8
from medsight.optimize.variants import optimize_run
from medsight.train.config import TrainConfig
from medsight.train.engine import fit
from medsight.train.inference import load_trained_model
from medsight.workflows import train_and_evaluate

# as in conftest.py: read at import, before any test changes the environment
SHARED_DATA = Path(os.environ.get("MEDSIGHT_DATA") or Path(__file__).parents[2] / "shared" / "data").resolve()
QUIET = {"log": lambda _: None}
FAST_TIMING = Timing(runs=20, seconds=0.05, max_seconds=1.0, throughput_seconds=0.1, warmup=2)


def _train(run_dir: Path, evaluate: bool, **config) -> Path:
    # no augmentation and the data's own image size (no resampling): seconds, not minutes, on 2 cores
    cfg = TrainConfig(bootstrap=100, augment="none", num_workers=0, image_size=32, **config)
    if evaluate:
        train_and_evaluate(cfg, run_dir, **QUIET)
    else:
        fit(cfg, run_dir, **QUIET)
    return run_dir


def _untrained_3d_run(run_dir: Path) -> Path:
    """A 3D run folder on AdrenalMNIST3D whose model is initialised, not trained.

    Export parity is a property of the exporter, not of the weights, and a 3D epoch costs half a
    minute on this machine; BatchNorm statistics are still taken from real volumes so that no layer
    is an identity. The checkpoint holds what ``load_trained_model`` reads, as ``fit`` writes it.
    """
    dataset = load_dataset("adrenalmnist3d")
    raw = InputSpec(spatial_dims=3, channels=1, image_size=28, intensity="scale", mean=[0.0], std=[1.0])
    train = prepare_images(dataset.splits["train"].images[:256], raw)
    spec = raw.model_copy(update={"mean": [float(train.mean())], "std": [float(train.std())]})
    torch.manual_seed(0)
    model = build_model("compact-resnet", 3, 1, 2, widths=[4, 8, 8]).train()
    with torch.no_grad():
        for start in range(0, 256, 64):
            model(prepare_images(dataset.splits["train"].images[start : start + 64], spec))
    info = {
        "model": "compact-resnet",
        "model_options": {"widths": [4, 8, 8]},
        "classes": dataset.classes,
        "input": spec.model_dump(),
        "modality": dataset.modality,
        "dataset": dataset.name,
    }
    run_dir.mkdir(parents=True)
    torch.save(
        {"inference": info, "best_state": model.state_dict(), "history": []}, run_dir / "checkpoint.pt"
    )
    config = {"dataset": dataset.name, "bootstrap": 100, "seed": 0}
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"config": config}))
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """2D synthetic (trained, evaluated), a second 2D one for ensembles, a 3D AdrenalMNIST one."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data folder {SHARED_DATA} is missing (see DESIGN.md).", pytrace=False)
    root = tmp_path_factory.mktemp("optimize-runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDSIGHT_HOME", str(root / "home"))
        patch.setenv("MEDSIGHT_DATA", str(SHARED_DATA))
        return {
            # widths 16-64: big enough that int8's file-size saving is not drowned by graph overhead
            "2d": _train(
                root / "2d", True, dataset="synthetic", epochs=1, model_options={"widths": [16, 32, 64]}
            ),
            "2d_b": _train(
                root / "2d_b",
                False,
                dataset="synthetic",
                epochs=1,
                seed=1,
                model_options={"widths": [8, 8, 16]},
            ),
            "3d": _untrained_3d_run(root / "3d"),
        }


@pytest.fixture(scope="module")
def optimized(runs: dict[str, Path]) -> dict:
    """int8 and both kinds of pruning, made once on the 2D run."""
    results = optimize_run(runs["2d"], quantize_to="int8", prune=0.5, finetune_steps=10, **QUIET)
    results["structured"] = optimize_run(
        runs["2d"], prune=0.25, prune_method="structured", finetune_steps=10, **QUIET
    )["pruned"]
    return results


def _copy_run(run_dir: Path, dest: Path) -> Path:
    shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns("exports", "variants", "plots"))
    return dest


def _val_inputs(run_dir: Path) -> tuple[torch.Tensor, nn.Module]:
    trained = load_trained_model(run_dir)
    name = yaml.safe_load((run_dir / "config.yaml").read_text())["config"]["dataset"]
    return prepare_images(load_dataset(name).splits["val"].images, trained.spec), trained.model


# --------------------------------------------------------------------------- export


@pytest.mark.parametrize("kind", ["2d", "3d"])
def test_onnx_export_matches_eager_with_free_batch(runs: dict[str, Path], kind: str) -> None:
    path = export_run(runs[kind], "onnx", **QUIET)
    check = json.loads(path.with_name("model.onnx.check.json").read_text())
    assert check["passed"] and check["max_abs_prob_diff"] <= 1e-4
    assert round(check["auc_exported"], 3) == round(check["auc_eager"], 3)
    graph = onnx.load(str(path))
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17
    # checked here independently of the check file: batches of 1 and 7 against eager
    inputs, model = _val_inputs(runs[kind])
    session = OnnxPredictor(path)
    for batch in (inputs[:1], inputs[:7]):
        with torch.no_grad():
            expected = torch.softmax(model(batch), 1).numpy()
        assert np.abs(predict(session, batch) - expected).max() <= 1e-4
    spec = json.loads((path.parent / "input_spec.json").read_text())
    assert spec["input"]["image_size"] == (28 if kind == "3d" else 32)
    assert "standardised" in spec["input_tensor"]


def test_torchscript_export_matches_eager(runs: dict[str, Path]) -> None:
    path = export_run(runs["2d"], "torchscript", **QUIET)
    assert json.loads(path.with_name(path.name + ".check.json").read_text())["passed"]
    inputs, model = _val_inputs(runs["2d"])
    with torch.no_grad():
        expected = torch.softmax(model(inputs[:5]), 1).numpy()
    assert np.abs(predict(TorchScriptPredictor(path), inputs[:5]) - expected).max() <= 1e-4


def test_corrupt_or_missing_checkpoint_is_refused_and_leaves_no_file(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    run = _copy_run(runs["2d"], tmp_path / "corrupt")
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 3])
    with pytest.raises(BadInputError, match="corrupt"):
        export_run(run, "onnx", **QUIET)
    (run / "checkpoint.pt").unlink()
    with pytest.raises(DataNotFoundError, match="checkpoint"):
        export_run(run, "torchscript", **QUIET)
    assert not (run / "exports").exists()


def test_failed_parity_check_refuses_with_figures(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _copy_run(runs["2d"], tmp_path / "strict")
    monkeypatch.setattr(export, "MAX_PROB_DIFF", 0.0)  # no float export is bit-exact: the check must refuse
    with pytest.raises(OptimizeError, match=r"max \|Δ probability\|.*AUC"):
        export_run(run, "onnx", **QUIET)
    assert not (run / "exports").exists()


# --------------------------------------------------------------------------- compress


def test_int8_static_is_smaller_and_keeps_auc(runs: dict[str, Path], optimized: dict) -> None:
    variant = runs["2d"] / "variants" / "int8"
    record = json.loads((variant / "variant.json").read_text())
    assert record["details"]["method"] == "static" and record["details"]["calibration_split"] == "train"
    ops = {node.op_type for node in onnx.load(str(variant / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    fp32 = runs["2d"] / "exports" / "model.onnx"
    assert (variant / "model.onnx").stat().st_size <= 0.4 * fp32.stat().st_size
    metrics = json.loads((variant / "metrics.json").read_text())
    assert abs(metrics["test"]["auc"] - metrics["original_test"]["auc"]) <= 0.005
    assert metrics["test"]["ci"]["auc"] is not None
    first_conv = next(n for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv")
    assert first_conv.name in record["details"]["left_in_float"]  # 8-bit pixels are not re-quantized


def test_quantization_method_follows_the_model() -> None:
    assert choose_method(nn.Sequential(nn.Conv2d(1, 64, 3), nn.Flatten(), nn.Linear(64, 2))) == "static"
    assert choose_method(nn.Sequential(nn.Linear(256, 128), nn.LSTM(128, 64))) == "dynamic"


def test_dynamic_int8_for_linear_models(tmp_path: Path) -> None:
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 2)).eval()
    export.export_onnx(mlp, torch.zeros(2, 1, 16, 16), tmp_path / "mlp.onnx")
    quantize_dynamic_int8(tmp_path / "mlp.onnx", tmp_path / "mlp8.onnx")
    x = torch.randn(5, 1, 16, 16)
    with torch.no_grad():
        expected = mlp(x).numpy()
    assert np.abs(OnnxPredictor(tmp_path / "mlp8.onnx").logits(x.numpy()) - expected).max() < 0.05


def test_quantizing_without_calibration_data_is_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    run = _copy_run(runs["2d"], tmp_path / "no-data")
    recorded = yaml.safe_load((run / "config.yaml").read_text())
    recorded["config"]["dataset"] = "vanished-set"  # imported once, since removed
    (run / "config.yaml").write_text(yaml.safe_dump(recorded))
    with pytest.raises(DataNotFoundError, match="cannot calibrate int8"):
        optimize_run(run, quantize_to="int8", **QUIET)
    assert not (run / "variants").exists() and not (run / "exports").exists()


def test_pruning_zeroes_the_requested_fraction_and_still_evaluates(
    runs: dict[str, Path], optimized: dict
) -> None:
    variants = runs["2d"] / "variants"
    magnitude = json.loads((variants / "pruned-unstructured-0.5" / "variant.json").read_text())["details"]
    assert magnitude["zero_weight_fraction"] == pytest.approx(0.5, abs=0.005)
    channels = json.loads((variants / "pruned-structured-0.25" / "variant.json").read_text())["details"]
    assert channels["zero_channel_fraction"] == pytest.approx(0.25, abs=0.05)
    # the saved weights themselves carry the zeros
    state = torch.load(variants / "pruned-unstructured-0.5" / "model.pt", weights_only=True)
    weights = torch.cat([v.flatten() for k, v in state.items() if k.endswith("weight") and v.ndim > 1])
    assert (weights == 0).float().mean().item() == pytest.approx(0.5, abs=0.01)
    for name in ("pruned-unstructured-0.5", "pruned-structured-0.25"):
        metrics = json.loads((variants / name / "metrics.json").read_text())
        assert 0.5 < metrics["test"]["auc"] <= 1 and "acc" in metrics["test"]


def test_low_rank_reduces_linear_parameters() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 2)).eval()
    with torch.no_grad():  # an exactly rank-8 layer: its factorisation must reproduce it
        model[1].weight.copy_(torch.randn(128, 8) @ torch.randn(8, 256) / 16)
    x = torch.randn(4, 1, 16, 16)
    expected = model(x)
    before = compress.linear_parameters(model)
    layers = compress.factorise_linear(model, 8)
    assert layers == {"1": 8}  # the 128 x 2 head is too small to gain from rank 8
    assert compress.linear_parameters(model) < before / 5
    assert torch.allclose(model(x), expected, atol=1e-4)


def test_low_rank_on_a_cnn_says_there_is_little_to_factorise(runs: dict[str, Path]) -> None:
    said: list[str] = []
    assert optimize_run(runs["2d"], low_rank=4, log=said.append)["low_rank"] is None
    assert any("nothing to factorise" in line and "convolutional" in line for line in said)
    assert not (runs["2d"] / "variants" / "lowrank-4").exists()


# --------------------------------------------------------------------------- bench and ensembles


def test_bench_writes_every_row_and_the_serving_choice(runs: dict[str, Path], optimized: dict) -> None:
    record = bench_run(runs["2d"], timing=FAST_TIMING, **QUIET)
    names = {row["variant"] for row in record["rows"]}
    assert {"eager", "torchscript", "onnx-fp32", "int8", "pruned-unstructured-0.5"} <= names
    on_disk = json.loads((runs["2d"] / "bench.json").read_text())
    assert on_disk["rows"] == record["rows"] and on_disk["threads"]["onnxruntime_intra_op"] >= 1
    for row in record["rows"]:
        assert row["size_mb"] > 0 and row["p99_ms"] >= row["p50_ms"] > 0 and row["throughput"] > 0
    serving = json.loads((runs["2d"] / "serving.json").read_text())
    eager_auc = next(r["test_auc"] for r in record["rows"] if r["variant"] == "eager")
    chosen = next(r for r in record["rows"] if r["variant"] == serving["variant"])
    assert chosen["test_auc"] >= eager_auc - 0.005 and serving["reason"]
    assert (runs["2d"] / serving["path"]).exists()
    images = load_dataset("synthetic").splits["test"].images[:4]
    assert load_serving_model(runs["2d"]).predict_images(images).shape == (4, 2)
    # a served export predicts as the eager run does, test-time augmentation included
    expected = load_trained_model(runs["2d"]).predict_images(images, tta=True)
    assert (
        np.abs(load_variant(runs["2d"], "onnx-fp32").predict_images(images, tta=True) - expected).max()
        <= 1e-4
    )


def test_ensemble_is_a_run_that_serves(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "ensemble"
    metrics = make_ensemble([runs["2d"], runs["2d_b"]], out, weights="3,1", tta=True, n_boot=50, **QUIET)
    assert metrics["test"]["auc"] > 0.5 and metrics["threshold"] is not None
    on_disk = json.loads((out / "metrics.json").read_text())
    assert {"val", "test", "threshold"} <= set(on_disk)
    assert (out / "report.html").exists() and (out / "plots" / "roc.png").exists()
    ensemble = load_servable(out)
    images = load_dataset("synthetic").splits["test"].images[:6]
    probs = ensemble.predict_images(images)
    members = [load_trained_model(runs[k]).predict_images(images, tta=True) for k in ("2d", "2d_b")]
    assert np.allclose(probs, 0.75 * members[0] + 0.25 * members[1], atol=1e-6)
    assert load_ensemble(out).threshold == pytest.approx(metrics["threshold"])


def test_ensemble_members_must_share_a_data_set(runs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="one data set"):
        make_ensemble([runs["2d"], runs["3d"]], tmp_path / "mixed", **QUIET)
    with pytest.raises(ConfigError, match="one per run"):
        make_ensemble([runs["2d"], runs["2d_b"]], tmp_path / "mixed", weights="1", **QUIET)
    assert not (tmp_path / "mixed").exists()


def test_bad_options_are_refused_before_anything_is_loaded(tmp_path: Path) -> None:
    missing = tmp_path / "no-run"  # would fail later, with another message, if options were checked late
    with pytest.raises(ConfigError, match="unknown export format"):
        export_run(missing, "tflite", **QUIET)
    with pytest.raises(ConfigError, match="positive"):
        optimize_run(missing, low_rank=0, **QUIET)
    with pytest.raises(ConfigError, match="nothing to do"):
        optimize_run(missing, **QUIET)


@pytest.mark.parametrize(
    ("args", "message"),
    [(["optimize", "{run}", "--prune", "1.5"], "between 0 and 1"), (["export", "{corrupt}"], "corrupt")],
)
def test_cli_bad_input_is_one_line_and_non_zero(
    runs: dict[str, Path], tmp_path: Path, run_cli, args: list[str], message: str
) -> None:
    corrupt = _copy_run(runs["2d"], tmp_path / "corrupt")
    (corrupt / "checkpoint.pt").write_bytes(b"PK\x03\x04 not a whole checkpoint")
    result = run_cli(*[a.format(run=runs["2d"], corrupt=corrupt) for a in args])
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
    assert (
        not (corrupt / "exports").exists()
        and not (runs["2d"] / "variants" / "pruned-unstructured-1.5").exists()
    )
