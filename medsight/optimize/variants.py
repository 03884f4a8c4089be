"""``medsight optimize``: make compressed variants of a run and show what each costs in accuracy.

Each variant lives in ``RUN/variants/<name>/`` (its model file, ``variant.json`` saying how it was
made, ``metrics.json``) and is evaluated exactly like the original: ``evaluate_split`` on the test
split, with the run's threshold chosen on validation, bootstrap CIs as configured for the run.
A folder appears only once its variant has been made and evaluated.
"""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medsight.errors import ConfigError
from medsight.evaluate.metrics import choose_threshold, evaluate_split
from medsight.optimize import compress, quantize
from medsight.optimize.common import (
    EXPORTS,
    VARIANTS,
    Log,
    OptimizeRun,
    file_mb,
    open_run,
    require_image_only,
    staged_folder,
    write_json,
)
from medsight.optimize.export import export_model
from medsight.optimize.predictors import EagerPredictor, OnnxPredictor, Predictor, predict
from medsight.train.tasks.classification import class_weights

Build = Callable[[Path], tuple[str, dict]]  # folder -> (model file name, details)


def state_dict_mb(model: nn.Module) -> float:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell() / 1e6


def test_probs(run: OptimizeRun, predictor: Predictor) -> np.ndarray:
    return predict(predictor, run.inputs("test", purpose="evaluate the variant on the test split"))


def test_metrics(run: OptimizeRun, probs: np.ndarray) -> dict:
    return evaluate_split(
        run.labels("test"),
        probs,
        run.trained.classes,
        run.trained.threshold,
        n_boot=run.n_boot,
        seed=run.seed,
    )


def own_threshold(run: OptimizeRun, predictor: Predictor, probs: np.ndarray) -> dict | None:
    """The variant's own operating threshold, chosen on validation by the run's rule (binary runs only).

    A compressed model's probabilities can drift even when its ranking (AUC) holds; the run's threshold
    then misplaces the operating point, and serving the variant should use this one.
    """
    if len(run.trained.classes) != 2:
        return None
    rule = str(run.config.get("threshold_rule", "youden"))
    val_probs = predict(predictor, run.inputs("val", purpose="choose the variant's threshold on validation"))
    threshold = choose_threshold(run.labels("val"), val_probs[:, 1], rule)
    acc = float(((probs[:, 1] >= threshold).astype(int) == run.labels("test")).mean())
    return {"threshold": threshold, "rule": f"{rule}, on the validation split", "test_acc": acc}


def original_metrics(run: OptimizeRun) -> dict:
    """The eager model judged the same way (no TTA), computed once per command."""
    if "original" not in run.cache:
        run.cache["original"] = test_metrics(run, test_probs(run, EagerPredictor(run.trained.model)))
    return run.cache["original"]


def _headline(metrics: dict) -> dict:
    return {"auc": metrics.get("auc"), "auc_ci": metrics.get("ci", {}).get("auc"), "acc": metrics.get("acc")}


def cost_line(name: str, metrics: dict, original: dict, size_mb: float, original_mb: float) -> str:
    def num(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    ci = metrics.get("ci", {}).get("auc")
    ci_text = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
    d_auc = None if None in (metrics.get("auc"), original.get("auc")) else metrics["auc"] - original["auc"]
    return (
        f"{name}: test AUC {num(metrics.get('auc'))}{ci_text} vs original {num(original.get('auc'))} "
        f"(Δ {'n/a' if d_auc is None else f'{d_auc:+.3f}'}); ACC {metrics['acc']:.3f} vs {original['acc']:.3f} "
        f"(Δ {metrics['acc'] - original['acc']:+.3f}); {size_mb:.3f} MB vs {original_mb:.3f} MB"
    )


def save_variant(run: OptimizeRun, name: str, build: Build, log: Log) -> dict:
    """Build a variant in a staging folder, evaluate it there, then move it into place."""
    original = original_metrics(run)
    original_mb = state_dict_mb(run.trained.model)
    with staged_folder(run.run_dir / VARIANTS / name) as folder:
        file_name, details = build(folder)
        path = folder / file_name
        predictor = (
            OnnxPredictor(path)
            if path.suffix == ".onnx"
            else EagerPredictor(compress.load_torch_variant(run.run_dir, folder))
        )
        probs = test_probs(run, predictor)
        metrics = test_metrics(run, probs)
        own = own_threshold(run, predictor, probs)
        size = file_mb(path)
        summary = {
            "variant": name,
            "threshold": run.trained.threshold,
            "test": metrics,
            "original_test": _headline(original),
            "cost": {
                "auc": None
                if None in (metrics.get("auc"), original.get("auc"))
                else metrics["auc"] - original["auc"],
                "acc": metrics["acc"] - original["acc"],
            },
            "own_threshold": own,
            "size_mb": size,
            "original_size_mb": original_mb,
        }
        write_json(folder / "metrics.json", summary)
    log(cost_line(name, metrics, original, size, original_mb))
    if own is not None and abs(own["test_acc"] - metrics["acc"]) > 0.01:
        log(
            f"  {name}: its probabilities have shifted: with its own validation threshold {own['threshold']:.3f} "
            f"test ACC is {own['test_acc']:.3f} (serving uses that threshold for this variant)"
        )
    return summary


# --------------------------------------------------------------------------- the variants


def quantize_variant(run: OptimizeRun, log: Log) -> dict:
    method = quantize.choose_method(run.trained.model)
    counts = quantize.parameter_counts(run.trained.model)
    log(
        f"int8: {method} quantization (conv parameters {counts['conv']:,}, Linear/recurrent {counts['linear']:,})"
    )
    calibration = None
    if method == "static":
        train = run.inputs("train", purpose="calibrate int8 static quantization on the run's training images")
        calibration = quantize.calibration_subset(train.numpy(), seed=run.seed)
    fp32 = run.run_dir / EXPORTS / "model.onnx"
    if not fp32.exists():
        export_model(run, "onnx", log)

    def build(folder: Path) -> tuple[str, dict]:
        out = folder / "model.onnx"
        if calibration is not None:
            details = quantize.quantize_static_int8(fp32, out, calibration)
        else:
            details = quantize.quantize_dynamic_int8(fp32, out)
        details["fp32_size_mb"] = file_mb(fp32)
        details["size_ratio_to_fp32"] = file_mb(out) / file_mb(fp32)
        return _record(folder, "model.onnx", "onnx", f"int8 {method}", details)

    return save_variant(run, "int8" if method == "static" else "int8-dynamic", build, log)


def prune_variant(run: OptimizeRun, amount: float, method: str, steps: int, log: Log) -> dict:
    inputs = run.inputs("train", purpose="fine-tune the pruned model on the training split")
    labels = torch.as_tensor(run.labels("train"))
    weights = class_weights(labels, len(run.trained.classes), str(run.config.get("class_weights", "none")))

    def build(folder: Path) -> tuple[str, dict]:
        model = copy.deepcopy(run.trained.model)
        compress.prune_model(model, amount, method)
        loss = compress.finetune(model, inputs, labels, steps=steps, seed=run.seed, class_weights=weights)
        compress.make_permanent(model)
        torch.save(model.state_dict(), folder / "model.pt")
        details = {"amount": amount, "pruning": method, "finetune_steps": steps, "finetune_last_loss": loss}
        details.update(compress.sparsity(model))
        log(
            f"pruned ({method}, {amount:g}): {details['zero_weight_fraction']:.1%} of conv/Linear weights and "
            f"{details['zero_channel_fraction']:.1%} of conv channels are zero; fine-tuned {steps} steps"
        )
        return _record(folder, "model.pt", "torch", f"{method} pruning", details)

    return save_variant(run, f"pruned-{method}-{amount:g}", build, log)


def low_rank_variant(run: OptimizeRun, rank: int, log: Log) -> dict | None:
    model = run.trained.model
    total = sum(p.numel() for p in model.parameters())
    linear_before = compress.linear_parameters(model)
    share = linear_before / max(1, total)
    factorised = copy.deepcopy(model)
    layers = compress.factorise_linear(factorised, rank)
    if not layers:
        log(
            f"low rank {rank}: nothing to factorise: Linear layers hold {linear_before:,} of {total:,} parameters "
            f"({share:.1%}) and none is large enough for rank {rank} to save space. This model is "
            "convolutional; pruning or int8 are the ways to shrink it."
        )
        return None
    linear_after = compress.linear_parameters(factorised)
    if share < 0.2:
        log(
            f"low rank {rank}: Linear layers hold only {share:.1%} of the parameters: little to factorise "
            "in a conv-heavy model; the variant is made, but expect a small saving."
        )

    def build(folder: Path) -> tuple[str, dict]:
        torch.save(factorised.state_dict(), folder / "model.pt")
        details = {
            "rank": rank,
            "factorised": layers,
            "linear_parameters_before": linear_before,
            "linear_parameters_after": linear_after,
        }
        log(f"low rank {rank}: {len(layers)} Linear layers, parameters {linear_before:,} -> {linear_after:,}")
        return _record(folder, "model.pt", "torch", "low-rank SVD", details)

    return save_variant(run, f"lowrank-{rank}", build, log)


def _record(folder: Path, file_name: str, fmt: str, method: str, details: dict) -> tuple[str, dict]:
    write_json(
        folder / "variant.json", {"file": file_name, "format": fmt, "method": method, "details": details}
    )
    return file_name, details


# --------------------------------------------------------------------------- the command


def check_options(
    quantize_to: str | None, prune: float | None, prune_method: str, low_rank: int | None
) -> None:
    if quantize_to is None and prune is None and low_rank is None:
        raise ConfigError("nothing to do: pass --quantize int8, --prune AMOUNT and/or --low-rank RANK.")
    if quantize_to not in (None, "int8"):
        raise ConfigError(f"--quantize '{quantize_to}' is not supported; use int8.")
    if prune is not None and not 0 < prune < 1:
        raise ConfigError(
            f"--prune {prune}: the share of weights to prune must lie strictly between 0 and 1."
        )
    if prune_method not in compress.PRUNE_METHODS:
        raise ConfigError(f"--prune-method '{prune_method}': choose {' or '.join(compress.PRUNE_METHODS)}.")
    if low_rank is not None and low_rank <= 0:
        raise ConfigError(f"--low-rank {low_rank}: the rank must be a positive whole number.")


def optimize_run(
    run_dir: Path,
    *,
    quantize_to: str | None = None,
    prune: float | None = None,
    prune_method: str = "unstructured",
    low_rank: int | None = None,
    finetune_steps: int = 300,
    log: Log = print,
) -> dict[str, dict | None]:
    """Make the asked-for variants of a run; every input is checked before anything is written."""
    check_options(quantize_to, prune, prune_method, low_rank)
    run = open_run(run_dir)
    require_image_only(run, "quantization, pruning and low rank")
    if quantize_to:
        run.inputs("train", purpose="calibrate int8 quantization on the run's training images")
    if prune is not None:
        run.inputs("train", purpose="fine-tune the pruned model on the training split")
    run.inputs("test", purpose="evaluate the variants on the test split")
    log(f"original: test AUC/ACC recomputed without TTA; threshold {run.trained.threshold} (from validation)")
    results: dict[str, dict | None] = {}
    if quantize_to:
        results["int8"] = quantize_variant(run, log)
    if prune is not None:
        results["pruned"] = prune_variant(run, prune, prune_method, finetune_steps, log)
    if low_rank is not None:
        results["low_rank"] = low_rank_variant(run, low_rank, log)
    return results


def list_variants(run_dir: Path) -> dict[str, dict]:
    folder = Path(run_dir) / VARIANTS
    if not folder.is_dir():
        return {}
    return {
        record.parent.name: json.loads(record.read_text()) for record in sorted(folder.glob("*/variant.json"))
    }
