"""Export a trained run to ONNX or TorchScript, checked against the eager model before it is kept.

The exported model takes the *standardised* input tensor, float32 of shape (N, C, *spatial) with
a free batch size, exactly what ``medsight.data.prepare.prepare_images`` makes from stored images
with the run's ``InputSpec``, and returns logits (N, K): softmax over axis 1 gives the class
probabilities. ``exports/input_spec.json`` beside the file holds the spec, the class names and
the operating threshold, so a consumer without medsight can prepare images the same way.
A fusion model (image + tabular features) has two inputs, ``image`` and ``tabular`` (float32
(N, F), encoded as ``input_spec.json``'s ``tabular`` block says), both with a free batch size.

Every export is checked on the validation split: max |Δ probability| against the eager model
must be ≤ 1e-4 and the AUC the same to 3 decimals (|Δ| < 0.0005). The figures are written next
to the file (``<file>.check.json``); a failed check refuses the export and leaves no file.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medsight.errors import ConfigError
from medsight.optimize.common import (
    EXPORTS,
    Log,
    OptimizeError,
    OptimizeRun,
    open_run,
    staged_file,
    write_json,
)
from medsight.optimize.predictors import (
    EagerPredictor,
    OnnxPredictor,
    Predictor,
    TorchScriptPredictor,
    predict,
)
from medsight.train.tasks.classification import validation_score

ONNX_OPSET = 18
MAX_PROB_DIFF = 1e-4
AUC_TOLERANCE = 5e-4  # "the same AUC to 3 decimals", without false alarms at a rounding boundary
FORMATS = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}


def example_input(run: OptimizeRun, batch: int = 2) -> tuple[torch.Tensor, ...]:
    """The exporters' example arguments: ``(image,)``, or ``(image, tabular)`` for a fusion model."""
    # batch 2, not 1: the exporters specialise a size-1 dimension and the batch must stay free
    spec = run.trained.spec
    image = torch.zeros(batch, spec.channels, *([spec.image_size] * spec.spatial_dims))
    tabular = run.trained.tabular
    return (image,) if tabular is None else (image, torch.zeros(batch, tabular.n_features))


@contextlib.contextmanager
def quiet_exporter():
    """The exporters print progress and deprecation notes that mean nothing to a user."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _arguments(example: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return example if isinstance(example, tuple) else (example,)


def export_onnx(model: nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...], path: Path) -> None:
    """ONNX via the torch.export-based exporter: BatchNorm folds into the convolutions, batch stays free."""
    example = _arguments(example)
    batch = torch.export.Dim("batch", min=1, max=65536)
    with quiet_exporter():
        torch.onnx.export(
            model.eval(),
            example,
            str(path),
            input_names=["input"] if len(example) == 1 else ["image", "tabular"],
            output_names=["logits"],
            opset_version=ONNX_OPSET,
            dynamo=True,
            dynamic_shapes=tuple({0: batch} for _ in example),  # by position: any forward signature
            external_data=False,  # one self-contained file, so a temporary name can be renamed
            verbose=False,
        )
    strip_debug_info(path)


def strip_debug_info(path: Path) -> None:
    """Drop the exporter's per-node stack traces and source paths: a third of a small file, and local paths."""
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    model.graph.doc_string = ""
    onnx.save(model, str(path))


def export_torchscript(
    model: nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...], path: Path
) -> None:
    """Traced and frozen TorchScript (frozen: BatchNorm folded, weights inlined), loadable from C++."""
    with quiet_exporter(), torch.no_grad():
        frozen = torch.jit.freeze(torch.jit.trace(model.eval(), _arguments(example), check_trace=False))
        frozen.save(str(path))


def parity_figures(labels: np.ndarray, reference: np.ndarray, probs: np.ndarray) -> dict:
    """How far an exported model's probabilities are from the eager model's on the same inputs."""
    auc_ref, auc = validation_score(labels, reference), validation_score(labels, probs)
    diff = np.abs(probs - reference)
    auc_delta = abs(auc - auc_ref) if np.isfinite(auc_ref) and np.isfinite(auc) else 0.0
    return {
        "split": "val",
        "n": int(len(labels)),
        "max_abs_prob_diff": float(diff.max()),
        "mean_abs_prob_diff": float(diff.mean()),
        "auc_eager": None if np.isnan(auc_ref) else round(float(auc_ref), 6),
        "auc_exported": None if np.isnan(auc) else round(float(auc), 6),
        "auc_abs_diff": float(auc_delta),
        "limits": {"max_abs_prob_diff": MAX_PROB_DIFF, "auc_abs_diff": AUC_TOLERANCE},
        "passed": bool(diff.max() <= MAX_PROB_DIFF and auc_delta < AUC_TOLERANCE),
    }


def check_against_eager(run: OptimizeRun, predictor: Predictor, fmt: str) -> dict:
    inputs = run.inputs("val", purpose="check the export on the validation split")
    reference = predict(EagerPredictor(run.trained.model), inputs)
    figures = parity_figures(run.labels("val"), reference, predict(predictor, inputs))
    if not figures["passed"]:
        raise OptimizeError(
            f"{fmt} export refused: on the validation split (n={figures['n']}) max |Δ probability| vs eager "
            f"is {figures['max_abs_prob_diff']:.2e} (limit {MAX_PROB_DIFF:.0e}) and AUC "
            f"{figures['auc_exported']} vs {figures['auc_eager']} (|Δ| {figures['auc_abs_diff']:.4f}, "
            f"limit {AUC_TOLERANCE}). Nothing was written."
        )
    return figures


def consumer_spec(run: OptimizeRun) -> dict:
    tabular = run.trained.tabular
    extra = {}
    if tabular is not None:
        extra = {
            "tabular": tabular.model_dump(),
            "tabular_tensor": "float32 (N, F), second input 'tabular': TabularSpec(**tabular).encode(values)",
            "tabular_features": tabular.names,
        }
    return {
        "input": run.trained.spec.model_dump(),
        "input_tensor": "standardised float32 (N, C, *spatial): prepare_images(images, InputSpec(**input))",
        "output": "logits (N, K); softmax over axis 1 gives class probabilities",
        "classes": run.trained.classes,
        "threshold": run.trained.threshold,
        "threshold_applies_to": "probability of classes[1] (binary runs)",
        "modality": run.trained.info.get("modality"),
        "dataset": run.dataset_name,
        **extra,
    }


def export_model(run: OptimizeRun, fmt: str, log: Log = print) -> Path:
    """Export ``run``'s model in ``fmt``, check it, and keep it only if the check passed."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format '{fmt}'; choose one of {', '.join(FORMATS)}.")
    if run.trained.heads:
        raise ConfigError(
            f"{run.run_dir}: this model has several labels ({', '.join(run.trained.heads)}); export covers "
            "one-label models for now. Train one run per label to export them."
        )
    run.inputs("val", purpose="check the export on the validation split")  # data first: refuse early
    final = run.run_dir / EXPORTS / FORMATS[fmt]
    check_file = final.with_name(final.name + ".check.json")
    with staged_file(final) as tmp, staged_file(check_file) as tmp_check:
        if fmt == "onnx":
            export_onnx(run.trained.model, example_input(run), tmp)
            figures = check_against_eager(run, OnnxPredictor(tmp), fmt)
        else:
            export_torchscript(run.trained.model, example_input(run), tmp)
            figures = check_against_eager(run, TorchScriptPredictor(tmp), fmt)
        write_json(tmp_check, {"file": final.name, "format": fmt, **figures})
    write_json(final.parent / "input_spec.json", consumer_spec(run))
    log(
        f"{fmt}: {final} ({final.stat().st_size / 1e6:.2f} MB); check on val (n={figures['n']}): "
        f"max |Δp| {figures['max_abs_prob_diff']:.1e}, AUC {figures['auc_exported']} vs eager "
        f"{figures['auc_eager']}: passed"
    )
    return final


def export_run(run_dir: Path, fmt: str, log: Log = print) -> Path:
    if fmt not in FORMATS:  # before loading anything
        raise ConfigError(f"unknown export format '{fmt}'; choose one of {', '.join(FORMATS)}.")
    return export_model(open_run(run_dir), fmt, log)
