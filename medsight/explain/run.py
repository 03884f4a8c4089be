"""Explain an evaluated run: a figure of maps over test cases and faithfulness scores in its report.

Runs after ``evaluate_run`` (DESIGN.md's flow: evaluate, then explain). It adds
``plots/explanations.png``, a ``"faithfulness"`` block in ``metrics.json`` and re-renders
``report.html`` with both; evaluation itself never depends on it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: headless servers and CI have no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from medsight.data.dataset import ImageDataset  # noqa: E402
from medsight.data.registry import load_dataset  # noqa: E402
from medsight.errors import ConfigError, DataNotFoundError  # noqa: E402
from medsight.evaluate.plots import save_figure  # noqa: E402
from medsight.evaluate.report import PLOT_CAPTIONS, write_report  # noqa: E402
from medsight.evaluate.run import EVAL_SPLITS, _notes, _privacy_notes  # noqa: E402
from medsight.explain.faithfulness import faithfulness_report  # noqa: E402
from medsight.explain.maps import METHODS, explain_images, predicted_classes  # noqa: E402
from medsight.explain.overlay import overlay_rgb  # noqa: E402
from medsight.train.inference import TrainedModel, load_trained_model  # noqa: E402
from medsight.train.run_folder import atomic_write_text, require_run  # noqa: E402

Log = Callable[[str], None]
PER_GROUP = 4  # cases shown per group (correct, wrong) in the figure


def _figure_cases(labels: np.ndarray, predicted: np.ndarray, confidence: np.ndarray) -> dict[str, np.ndarray]:
    """The most confident correct and the most confident wrong cases: what a reviewer wants to see."""
    order = np.argsort(-confidence, kind="stable")
    right = predicted[order] == labels[order]
    return {"correct": order[right][:PER_GROUP], "wrong": order[~right][:PER_GROUP]}


def plot_explanations(
    images: np.ndarray,
    maps: dict[str, np.ndarray],
    cases: dict[str, np.ndarray],
    captions: list[str],
    path: Path,
) -> Path:
    """Per group two rows: the images, then the same images with their maps over them."""
    fig, axes = plt.subplots(4, PER_GROUP, figsize=(2.3 * PER_GROUP, 9.6), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for g, (name, chosen) in enumerate(cases.items()):
        if chosen.size == 0:
            axes[2 * g, 0].text(0.5, 0.5, f"no {name} cases", ha="center", va="center")
        for col, case in enumerate(chosen):
            saliency = maps[name][col]
            plain = overlay_rgb(images[case], saliency, opacity=0.0)  # same slice as the overlay
            axes[2 * g, col].imshow(plain)
            axes[2 * g, col].set_title(
                f"{name}\n{captions[case]}", fontsize=8, color="darkgreen" if name == "correct" else "darkred"
            )
            axes[2 * g + 1, col].imshow(overlay_rgb(images[case], saliency))
    return save_figure(fig, path)


def explanation_figures(
    run_dir: Path,
    trained: TrainedModel,
    dataset: ImageDataset,
    split: str,
    method: str = "gradcam",
    n: int = 32,
    seed: int = 0,
    time_budget_s: float | None = None,
) -> tuple[dict[str, Path], dict]:
    """Write ``plots/explanations.png`` and return it with the faithfulness scores on ``n`` cases.

    ``time_budget_s`` scores fewer cases when ``n`` would take longer (large 3D models).
    """
    images, labels = dataset.splits[split].images, np.asarray(dataset.splits[split].labels)
    probs = _split_probs(Path(run_dir), split, len(labels)) if len(labels) else None
    probs = trained.predict_images(images) if probs is None else probs
    predicted = predicted_classes(probs, trained.threshold)
    confidence = probs[np.arange(len(probs)), predicted]
    cases = _figure_cases(labels, predicted, confidence)
    if trained.spec.spatial_dims == 1:  # signals: saliency over time, not Grad-CAM (timeline.py)
        from medsight.explain.timeline import time_explanation_figures

        return time_explanation_figures(
            run_dir, trained, dataset, split, probs, cases, n, seed, time_budget_s
        )
    maps = {  # a group may be empty (no wrong case on an easy split)
        name: explain_images(trained, images[idx], method, predicted[idx])[0] if len(idx) else []
        for name, idx in cases.items()
    }
    captions = [
        f"true {dataset.classes[t]}\npred {dataset.classes[p]} p={c:.2f}"
        for t, p, c in zip(labels, predicted, confidence, strict=True)
    ]
    path = plot_explanations(images, maps, cases, captions, Path(run_dir) / "plots" / "explanations.png")
    scores = faithfulness_report(
        trained, images, labels, n=n, seed=seed, method=method, time_budget_s=time_budget_s
    )
    return {"explanations": path}, {**scores, "split": split}


def _split_probs(run_dir: Path, split: str, size: int) -> np.ndarray | None:
    """The evaluation's own predictions, when it saved them: a 3D split is slow to predict twice."""
    try:
        with np.load(run_dir / "predictions.npz") as saved:
            probs = saved[f"{split}_probs"]
    except (FileNotFoundError, KeyError, ValueError, OSError):
        return None
    return probs if len(probs) == size else None


def _evaluated_split(metrics: dict) -> str:
    return next((s for s in ("test", "train") if s in metrics), "val")


def _rerender_report(run_dir: Path, config: dict, dataset: ImageDataset, metrics: dict, extra: dict) -> Path:
    """The evaluation's report again, same sections, plus the explanations figure and faithfulness."""
    folder = run_dir / "plots"
    plots = {k: folder / f"{k}.png" for k in PLOT_CAPTIONS if (folder / f"{k}.png").is_file()}
    plots.update(extra)
    binary = len(dataset.classes) == 2
    notes = _notes(binary, _evaluated_split(metrics), bool(config.get("tta")))
    return write_report(
        run_dir / "report.html",
        title=f"medsight run: {config['model']} on {dataset.name}",
        dataset=dataset.info(),
        config=config,
        metrics=metrics,
        plots=plots,
        notes=notes + _privacy_notes(metrics.get("privacy")),
    )


def explain_run(
    run_dir: Path,
    split: str = "test",
    method: str = "gradcam",
    n: int = 32,
    *,
    time_budget_s: float | None = None,
    log: Log = print,
) -> dict:
    """Explain an evaluated run; returns its metrics with the ``"faithfulness"`` block added."""
    run_dir = require_run(Path(run_dir), "config.yaml", "checkpoint.pt")
    if not (run_dir / "metrics.json").is_file():
        raise DataNotFoundError(f"{run_dir}: not evaluated yet; run `medsight evaluate {run_dir}` first.")
    if split not in EVAL_SPLITS or method not in METHODS or n < 1:
        raise ConfigError(
            f"explain needs a split in {', '.join(EVAL_SPLITS)}, a method in {', '.join(METHODS)} and n >= 1 "
            f"(got {split!r}, {method!r}, {n})."
        )
    config = yaml.safe_load((run_dir / "config.yaml").read_text())["config"]
    dataset = load_dataset(config["dataset"])
    trained = load_trained_model(run_dir)
    if trained.tabular is not None or trained.heads:  # perturbations here change the image alone
        raise ConfigError(
            f"{run_dir}: the explanation figure and faithfulness scores cover image-only, one-label models; "
            "this run also reads tabular features or has several labels. Single predictions are still "
            "explained (Grad-CAM of the image branch, with the patient's tabular values held fixed)."
        )
    plots, faithfulness = explanation_figures(
        run_dir,
        trained,
        dataset,
        split,
        method,
        n,
        seed=int(config.get("seed", 0)),
        time_budget_s=time_budget_s,
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["faithfulness"] = faithfulness
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    report = _rerender_report(run_dir, config, dataset, metrics, plots)
    log(summary_line(faithfulness))
    log(f"report: {report}")
    return metrics


def _fmt(block: dict) -> str:
    mean, sd = block.get("mean"), block.get("sd")
    return "n/a" if mean is None or not math.isfinite(mean) else f"{mean:.3f} ± {sd:.3f}"


def summary_line(faithfulness: dict) -> str:
    f = faithfulness
    return (
        f"faithfulness ({f['method']}, {f['n']} {f['split']} cases): deletion AUC {_fmt(f['deletion_auc'])} "
        f"(random {_fmt(f['random_deletion_auc'])}, lower is better), insertion AUC "
        f"{_fmt(f['insertion_auc'])} (random {_fmt(f['random_insertion_auc'])}, higher is better), "
        f"randomisation Spearman {_fmt(f['randomisation_spearman'])} (near 0 is better)"
    )
