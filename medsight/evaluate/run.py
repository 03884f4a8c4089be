"""Evaluate a run folder: threshold chosen on validation only, one look at the held-out split.

Writes ``metrics.json``, ``predictions.npz``, ``plots/*.png`` and ``report.html`` into the run
folder and marks the run complete.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

from medsight.data.registry import load_dataset
from medsight.evaluate import ecg, plots
from medsight.evaluate.metrics import choose_threshold, evaluate_split
from medsight.evaluate.multitask import evaluate_heads, heads_summary
from medsight.evaluate.report import write_report
from medsight.train.inference import load_checkpoint, load_trained_model
from medsight.train.run_folder import atomic_write_text, read_status, require_run, set_status

Log = Callable[[str], None]
EVAL_SPLITS = ("val", "test", "train")


def evaluate_run(run_dir: Path, split: str = "test", *, log: Log = print) -> dict:
    run_dir = require_run(Path(run_dir), "config.yaml", "checkpoint.pt")
    if split not in EVAL_SPLITS:
        from medsight.errors import ConfigError

        raise ConfigError(f"split '{split}' is not one of {', '.join(EVAL_SPLITS)}.")
    if run_task(run_dir) == "segmentation":
        from medsight.evaluate.segmentation import evaluate_segmentation_run

        return evaluate_segmentation_run(run_dir, split, log=log)
    recorded = yaml.safe_load((run_dir / "config.yaml").read_text())
    config = recorded["config"]
    trained = load_trained_model(run_dir)
    dataset = load_dataset(config["dataset"])
    tta = bool(config.get("tta"))
    n_boot, seed = int(config.get("bootstrap", 1000)), int(config.get("seed", 0))
    splits = {name: dataset.splits[name] for name in ("val", split)}
    labels = {name: s.labels for name, s in splits.items()}
    # tabular features: read by fusion models only (None for a plain data set)
    probs = {name: trained.predict_images(s.images, tta=tta, tabular=s.tabular) for name, s in splits.items()}
    binary = len(dataset.classes) == 2
    rule = config.get("threshold_rule", "youden")
    heads = None
    if trained.heads:  # several labels: each evaluated on its own; the first fills the usual blocks
        heads, labels, probs = evaluate_heads(trained.heads, labels, probs, rule, n_boot, seed)
    threshold = choose_threshold(labels["val"], probs["val"][:, 1], rule) if binary else None
    metrics: dict = {
        "dataset": dataset.name,
        "model": config["model"],
        "threshold": threshold,
        "threshold_rule": f"{rule}, chosen on the validation split only" if binary else "argmax",
        "val": evaluate_split(
            labels["val"], probs["val"], dataset.classes, threshold, n_boot=n_boot, seed=seed
        ),
    }
    if split != "val":
        metrics[split] = evaluate_split(
            labels[split], probs[split], dataset.classes, threshold, n_boot=n_boot, seed=seed
        )
    if heads is not None:
        metrics["heads"] = heads
    if dataset.modality == "ecg" and binary:  # PVC sensitivity/PPV per record (evaluate/ecg.py)
        metrics["ecg"] = ecg.ecg_metrics(dataset, probs, threshold)
    status = read_status(run_dir)
    metrics["training"] = {
        k: status.get(k) for k in ("epochs_trained", "best_epoch", "train_seconds", "stopped")
    }
    if status.get("privacy"):  # trained with DP: the ε the accountant says was actually spent
        metrics["privacy"] = {
            k: status["privacy"][k] for k in ("epsilon", "delta", "max_grad_norm", "accountant")
        }
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    np.savez_compressed(
        run_dir / "predictions.npz",
        **{f"{k}_probs": v for k, v in probs.items()},
        **{f"{k}_labels": v for k, v in labels.items()},
    )
    figures = _plots(run_dir, dataset, split, labels[split], probs[split], threshold, metrics[split])
    if "ecg" in metrics:  # beats drawn as traces, and a strip of one record
        figures.update(ecg.ecg_plots(run_dir, dataset, split, probs[split], threshold))
    report = write_report(
        run_dir / "report.html",
        title=f"medsight run: {config['model']} on {dataset.name}",
        dataset=dataset.info(),
        config=config,
        metrics=metrics,
        plots=figures,
        notes=_notes(binary, split, tta)
        + _privacy_notes(metrics.get("privacy"))
        + (
            [f"Several labels; the figures show '{next(iter(heads))}'. " + heads_summary(heads, split)]
            if heads
            else []
        ),
    )
    set_status(run_dir, "complete", report=str(report))
    log(summary_line(metrics, split))
    if "ecg" in metrics:
        log(ecg.ecg_summary(metrics["ecg"], split))
    if heads is not None:
        log(heads_summary(heads, split))
    log(f"report: {report}")
    return metrics


def run_task(run_dir: Path) -> str:
    """What a run learnt, from its checkpoint; runs from before tasks existed are classifiers."""
    inference = load_checkpoint(run_dir / "checkpoint.pt").get("inference") or {}
    return inference.get("task", "classification")


def _plots(
    run_dir: Path, dataset, split: str, labels, probs, threshold, split_metrics: dict
) -> dict[str, Path]:
    folder = run_dir / "plots"
    folder.mkdir(exist_ok=True)
    checkpoint = load_checkpoint(run_dir / "checkpoint.pt")
    figures = {
        "training_curves": plots.plot_training_curves(checkpoint["history"], folder / "training_curves.png")
    }
    classes = dataset.classes
    figures["roc"] = plots.plot_roc(labels, probs, classes, folder / "roc.png", threshold=threshold)
    figures["pr"] = plots.plot_pr(labels, probs, classes, folder / "pr.png")
    figures["confusion"] = plots.plot_confusion(
        split_metrics["confusion_matrix"], classes, folder / "confusion.png"
    )
    figures["calibration"] = plots.plot_reliability(split_metrics["calibration"], folder / "calibration.png")
    images = dataset.splits[split].images.astype(np.float32)
    figures["examples"] = plots.plot_examples(
        images, labels, probs, classes, threshold, folder / "examples.png"
    )
    return figures


def _notes(binary: bool, split: str, tta: bool) -> list[str]:
    notes = [
        f"Metrics on the {split} split were computed once, after training; model selection used validation."
    ]
    if binary:
        notes.append(
            "acc_at_0_5 is accuracy at a 0.5 threshold (MedMNIST protocol); acc, sensitivity, "
            "specificity and F1 use the operating threshold chosen on validation, as served."
        )
    if tta:
        notes.append("Predictions average test-time augmentation (flips where the anatomy allows them).")
    notes.append("95% confidence intervals: stratified bootstrap over cases.")
    return notes


def _privacy_notes(privacy: dict | None) -> list[str]:
    if not privacy:
        return []
    return [
        f"Trained with differential privacy (DP-SGD, Opacus): ε = {privacy['epsilon']:.3f} spent at "
        f"δ = {privacy['delta']:g} ({privacy['accountant']} accountant), per-sample gradients clipped to "
        f"norm {privacy['max_grad_norm']:g}. The guarantee covers the training split's records as seen "
        "by the optimiser; the input standardisation (training images' mean and std) was computed "
        "without noise, and the validation split chose the checkpoint and threshold without privacy."
    ]


def summary_line(metrics: dict, split: str) -> str:
    m = metrics[split]
    ci = m.get("ci", {}).get("auc") or [None, None]
    auc = f"{m['auc']:.3f}" if m.get("auc") is not None else "n/a"
    ci_text = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci[0] is not None else ""
    line = f"{split}: AUC {auc}{ci_text}  ACC {m['acc']:.3f}"
    if metrics.get("threshold") is not None:
        line += (
            f" (threshold {metrics['threshold']:.3f} from val)  ACC@0.5 {m['acc_at_0_5']:.3f}  "
            f"sens {m['sensitivity']:.3f}  spec {m['specificity']:.3f}"
        )
    return line
