"""Plots of a run: training curves, ROC, PR, confusion, reliability, example cases.

Every function draws with matplotlib's Agg backend (no display needed), saves one PNG at
``path``, closes its figure (long runs would otherwise leak memory) and returns ``path``.
Input conventions match ``metrics``: integer labels (N,), softmax probs (N, K).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: headless servers and CI have no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve  # noqa: E402

DPI = 110


def save_figure(fig: Figure, path: Path) -> Path:
    """Lay out, write as PNG and close (a long run must not keep every figure in memory)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _column(history: list[dict], key: str) -> np.ndarray:
    """One history field as floats; missing or None → NaN so matplotlib leaves a gap."""
    return np.array([np.nan if row.get(key) is None else float(row[key]) for row in history])


def plot_training_curves(history: list[dict], path: Path) -> Path:
    """Losses, validation AUC and learning rate per epoch, in three panels."""
    fig, (ax_loss, ax_auc, ax_lr) = plt.subplots(1, 3, figsize=(12, 3.6))
    epochs = _column(history, "epoch") if history else np.array([])
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        ax_loss.plot(epochs, _column(history, key), marker="o", markersize=3, label=label)
    ax_loss.set(title="Loss", xlabel="epoch", ylabel="loss")
    ax_loss.legend()
    ax_auc.plot(epochs, _column(history, "val_auc"), marker="o", markersize=3, color="tab:green")
    ax_auc.set(title="Validation AUC", xlabel="epoch", ylabel="AUC")
    lr = _column(history, "lr")
    ax_lr.plot(epochs, lr, color="tab:purple")
    if np.nanmin(lr, initial=np.inf) > 0:  # log scale only makes sense for positive rates
        ax_lr.set_yscale("log")
    ax_lr.set(title="Learning rate", xlabel="epoch", ylabel="lr")
    for ax in (ax_loss, ax_auc, ax_lr):
        ax.grid(alpha=0.3)
    return save_figure(fig, path)


def _both_classes(target: np.ndarray) -> bool:
    return 0 < int(target.sum()) < target.size


def _one_vs_rest(labels: np.ndarray, probs: np.ndarray, classes: list[str]):
    """(name, binary target, score) per curve: one curve for binary, one per class otherwise."""
    labels = np.asarray(labels).astype(np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape[1] == 2:
        yield str(classes[1]), (labels == 1).astype(int), probs[:, 1]
        return
    for k, name in enumerate(classes):
        target = (labels == k).astype(int)
        if _both_classes(target):  # a curve needs positives and negatives
            yield str(name), target, probs[:, k]


def plot_roc(labels, probs, classes: list[str], path: Path, threshold: float | None = None) -> Path:
    """ROC curve(s) with AUC in the legend; for binary, the operating point at ``threshold``."""
    fig, ax = plt.subplots(figsize=(5.2, 5))
    for name, target, score in _one_vs_rest(labels, probs, classes):
        fpr, tpr, _ = roc_curve(target, score)
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc(fpr, tpr):.3f})")
        if threshold is not None and np.asarray(probs).shape[1] == 2:
            predicted = score >= threshold
            op_fpr = predicted[target == 0].mean()
            op_tpr = predicted[target == 1].mean()
            ax.plot(op_fpr, op_tpr, "o", color="black", label=f"threshold {threshold:.3f}")
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=1, label="chance")
    ax.set(
        xlabel="1 - specificity (false positive rate)",
        ylabel="sensitivity (true positive rate)",
        title="ROC",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_pr(labels, probs, classes: list[str], path: Path) -> Path:
    """Precision-recall curve(s) with average precision; dotted lines mark each class's prevalence."""
    fig, ax = plt.subplots(figsize=(5.2, 5))
    for name, target, score in _one_vs_rest(labels, probs, classes):
        precision, recall, _ = precision_recall_curve(target, score)
        ap = average_precision_score(target, score)
        (line,) = ax.plot(recall, precision, label=f"{name} (AP {ap:.3f})")
        # a classifier with no skill sits at the prevalence, not at 0.5
        ax.axhline(target.mean(), linestyle=":", linewidth=1, color=line.get_color())
    ax.set(
        xlabel="recall (sensitivity)",
        ylabel="precision (PPV)",
        title="Precision-recall",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(loc="lower left", fontsize="small")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_confusion(confusion: list[list[int]], classes: list[str], path: Path) -> Path:
    """Confusion matrix, rows true and columns predicted, annotated with counts.

    Colour is the row share (recall per class) so rare classes are as readable as common ones.
    """
    counts = np.asarray(confusion, dtype=np.int64)
    support = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, support, out=np.zeros(counts.shape), where=support > 0)
    size = max(4.0, 0.6 * len(classes) + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    for (i, j), count in np.ndenumerate(counts):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if share[i, j] > 0.5 else "black")
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, [str(c) for c in classes], rotation=45, ha="right")
    ax.set_yticks(ticks, [str(c) for c in classes])
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix")
    return save_figure(fig, path)


def plot_reliability(calib: dict, path: Path) -> Path:
    """Reliability diagram (accuracy vs confidence per bin) above a bar chart of bin counts."""
    bins = calib["bins"]
    centres = np.array([(b["lo"] + b["hi"]) / 2 for b in bins])
    widths = np.array([b["hi"] - b["lo"] for b in bins])
    accuracy = np.array([np.nan if b["accuracy"] is None else b["accuracy"] for b in bins])
    confidence = np.array([np.nan if b["confidence"] is None else b["confidence"] for b in bins])
    counts = np.array([b["count"] for b in bins])
    fig, (ax, ax_count) = plt.subplots(
        2, 1, figsize=(5.2, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.bar(centres, np.nan_to_num(accuracy), width=widths, edgecolor="black", alpha=0.7, label="accuracy")
    ax.plot(confidence, accuracy, "o", color="tab:red", label="bin: accuracy at mean confidence")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=f"Reliability (ECE {calib['ece']:.3f})")
    ax.legend(loc="upper left", fontsize="small")
    ax_count.bar(centres, counts, width=widths, edgecolor="black", color="tab:grey")
    ax_count.set(xlabel="confidence (max probability)", ylabel="cases")
    return save_figure(fig, path)


# --------------------------------------------------------------------------- examples


def _display_image(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """One case as (H, W) grey or (H, W, 3) RGB in [0, 1]; 3D volumes show their middle slice."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 2:
        image = image[None]
    if image.ndim == 4:  # (C, D, H, W)
        image = image[:, image.shape[1] // 2]
    shown = np.moveaxis(image[:3], 0, -1) if image.shape[0] == 3 else image[0]
    lo, hi = np.nanmin(shown), np.nanmax(shown)
    shown = (shown - lo) / (hi - lo) if hi > lo else np.zeros_like(shown)
    return shown, (None if shown.ndim == 3 else "gray")


def _predictions(probs: np.ndarray, threshold: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Predicted class and the probability given to it (binary honours the threshold)."""
    if probs.shape[1] == 2 and threshold is not None:
        predicted = (probs[:, 1] >= threshold).astype(np.int64)
    else:
        predicted = probs.argmax(axis=1)
    return predicted, probs[np.arange(len(probs)), predicted]


def _draw_group(axes: list, images, cases: np.ndarray, labels, predicted, confidence, classes, name: str):
    for ax in axes:
        ax.axis("off")
    if cases.size == 0:
        axes[0].text(0.5, 0.5, f"no {name} examples", ha="center", va="center", transform=axes[0].transAxes)
        return
    for ax, case in zip(axes, cases, strict=False):
        shown, cmap = _display_image(images[case])
        ax.imshow(shown, cmap=cmap)
        truth, guess = classes[labels[case]], classes[predicted[case]]
        title = f"{name}\ntrue {truth}\npred {guess} p={confidence[case]:.2f}"
        ax.set_title(title, fontsize=8, color="darkgreen" if name == "correct" else "darkred")


def plot_examples(
    images: np.ndarray, labels, probs, classes: list[str], threshold: float | None, path: Path, n: int = 8
) -> Path:
    """Grid of the ``n`` most confident correct cases (top rows) and ``n`` most confident wrong ones.

    images: (N, C, H, W) or (N, C, D, H, W), any value range (each tile is min-max normalised).
    """
    labels = np.asarray(labels).astype(np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    predicted, confidence = _predictions(probs, threshold)
    by_confidence = np.argsort(-confidence, kind="stable")
    right = predicted[by_confidence] == labels[by_confidence]
    groups = {"correct": by_confidence[right][:n], "wrong": by_confidence[~right][:n]}
    cols = max(1, min(n, 4))
    rows_per_group = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(
        2 * rows_per_group, cols, figsize=(2.2 * cols, 2.6 * 2 * rows_per_group), squeeze=False
    )
    for g, (name, cases) in enumerate(groups.items()):
        group_axes = list(axes[g * rows_per_group : (g + 1) * rows_per_group].ravel())
        _draw_group(group_axes, images, cases, labels, predicted, confidence, classes, name)
    return save_figure(fig, path)
