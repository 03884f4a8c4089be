"""Figures and the HTML report of a segmentation run: curves, per-image overlays, metric tables.

Every evaluated image gets one figure of four panels: the image, the reference mask, the
prediction, and the errors (true positives white, false positives red, false negatives blue),
with the region of interest's edge drawn; a reader sees at once where the model misses vessels and
where it invents them. The page reuses the classification report's sections and styling.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from medsight.data.segmentation import SegmentationDataset, SegmentationSplit  # noqa: E402
from medsight.evaluate.report import (  # noqa: E402
    CSS,
    _config_section,
    _data_section,
    _fmt_ci,
    _notes_section,
    _plots_section,
    _table,
    fmt,
)

HEADLINE = (
    ("dice", "Dice (F1)"),
    ("iou", "IoU (Jaccard)"),
    ("sensitivity", "Sensitivity"),
    ("specificity", "Specificity"),
    ("auc", "Pixel AUC (ROC)"),
    ("hd95", "Hausdorff distance, 95th percentile ({unit}; lower is better)"),
    ("dice_at_0_5", "Dice at threshold 0.5"),
)
UNIT_WORDS = {
    "mm": "millimetres (from the images' pixel spacing)",
    "px": "pixels (not every image carries its pixel spacing)",
}
ERROR_COLOURS = {"tp": (1.0, 1.0, 1.0), "fp": (0.9, 0.1, 0.1), "fn": (0.2, 0.4, 1.0)}


def display_image(image: np.ndarray) -> np.ndarray:
    """(C, H, W) stored image -> (H, W[, 3]) in [0, 1] for display; volumes show their middle slice."""
    if image.ndim == 4:
        image = image[:, image.shape[1] // 2]
    array = image.astype(np.float32)
    low, high = np.percentile(array, [0.5, 99.5])
    array = np.clip((array - low) / max(high - low, 1e-6), 0, 1)
    return np.moveaxis(array, 0, -1) if array.shape[0] == 3 else array[0]


def middle(array: np.ndarray | None) -> np.ndarray | None:
    return array[array.shape[0] // 2] if array is not None and array.ndim == 3 else array


def error_map(predicted: np.ndarray, truth: np.ndarray, roi: np.ndarray | None) -> np.ndarray:
    """(H, W, 3): true positives white, false positives red, false negatives blue, outside ROI dark."""
    rgb = np.zeros((*truth.shape, 3), dtype=np.float32)
    for kind, where in (("tp", predicted & truth), ("fp", predicted & ~truth), ("fn", ~predicted & truth)):
        rgb[where] = ERROR_COLOURS[kind]
    if roi is not None:
        rgb[roi == 0] *= 0.3
    return rgb


def plot_overlay(image, truth, probs, roi, threshold: float, title: str, path: Path) -> Path:
    """Four panels: image, reference, prediction, errors."""
    truth, probs, roi = middle(truth) > 0, middle(probs), middle(roi)
    predicted = probs >= threshold
    if roi is not None:
        predicted &= roi > 0
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.3))
    panels = [
        (display_image(image), "image", None),
        (truth, "reference", "gray"),
        (predicted, f"prediction (p ≥ {threshold:.2f})", "gray"),
        (error_map(predicted, truth, roi), "errors: FP red, FN blue", None),
    ]
    for ax, (array, label, cmap) in zip(axes, panels, strict=True):
        ax.imshow(array, cmap=cmap, interpolation="nearest")
        if roi is not None:
            ax.contour(roi > 0, levels=[0.5], colors="yellow", linewidths=0.5)
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_curves(history: list[dict], path: Path) -> Path:
    """Training and validation loss, and validation Dice, per epoch."""
    epochs = [row["epoch"] for row in history]
    score_key = "val_dice"  # the engine names it after the task's score (Trainer.history_key)
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(9, 3.3))
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        ax_loss.plot(
            epochs, [row.get(key) or np.nan for row in history], marker="o", markersize=3, label=label
        )
    ax_loss.set(title="Loss (Dice + CE, inside the ROI)", xlabel="epoch")
    ax_loss.legend()
    ax_dice.plot(
        epochs, [row.get(score_key) or np.nan for row in history], marker="o", markersize=3, color="tab:green"
    )
    ax_dice.set(title="Validation Dice (whole images, argmax)", xlabel="epoch")
    for ax in (ax_loss, ax_dice):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save_probability_maps(folder: Path, probs: list[np.ndarray], names: list[str]) -> None:
    """8-bit PNGs of the probability maps (2D), for a look outside medsight."""
    folder.mkdir(parents=True, exist_ok=True)
    for p, name in zip(probs, names, strict=True):
        if p.ndim == 2:
            Image.fromarray(np.round(p * 255).astype(np.uint8)).save(folder / f"{name}.png")


def write_segmentation_outputs(
    run_dir: Path,
    config: dict,
    dataset: SegmentationDataset,
    split: str,
    probs: list[np.ndarray],
    metrics: dict,
) -> Path:
    """Curves, overlays, probability maps and report.html of an evaluated run; returns the report."""
    from medsight.train.inference import load_checkpoint

    plots = run_dir / "plots"
    plots.mkdir(exist_ok=True)
    history = load_checkpoint(run_dir / "checkpoint.pt").get("history") or []
    # (the key is the caption: the classification report's "training_curves" caption speaks of AUC)
    figures = {"loss_and_validation_Dice_per_epoch": plot_curves(history, plots / "training_curves.png")}
    part: SegmentationSplit = dataset.splits[split]
    per_image = {row["name"]: row for row in metrics[split]["per_image"]}
    overlays = []
    for image, mask, roi, p, name in zip(part.images, part.masks, part.rois, probs, part.names, strict=True):
        title = f"{name}: Dice {fmt(per_image[name]['dice'])}"
        overlays.append(
            plot_overlay(image, mask, p, roi, metrics["threshold"], title, plots / "overlays" / f"{name}.png")
        )
    save_probability_maps(run_dir / "predictions" / split, probs, part.names)
    return write_segmentation_report(
        run_dir / "report.html", config, dataset, metrics, split, figures, overlays
    )


def _results_section(metrics: dict, split: str) -> str:
    test, val = metrics[split], metrics.get("val") or {}
    unit = metrics["hd95_unit"]
    rows = [
        (
            html.escape(label.format(unit=unit)),
            fmt(test.get(key)),
            _fmt_ci(test["ci"].get(key)),
            fmt(val.get(key)),
        )
        for key, label in HEADLINE
    ]
    roi = (
        "inside the region of interest (field of view)"
        if metrics.get("region_of_interest")
        else "over whole images"
    )
    note = (
        f'<p class="note">Every metric is computed per image {roi} and averaged over the {test["n"]} '
        f"{split} images; 95% CI: percentile bootstrap over images ({test['n_boot']} resamples). A pixel "
        f"counts as structure when its probability is at least <b>{fmt(metrics['threshold'])}</b>, the "
        "threshold that maximised the mean Dice of the <b>validation images only</b>.</p>"
    )
    header = ("Metric", split.capitalize(), f"{split.capitalize()} 95% CI", "Validation")
    per_image = [
        (html.escape(str(row["name"])), *(fmt(row[k]) for k, _ in HEADLINE[:6])) for row in test["per_image"]
    ]
    return "\n".join(
        [
            "<h2>Results</h2>",
            note,
            _table(header, rows),
            f"<h3>Per image ({html.escape(split)})</h3>",
            _table(("Image", "Dice", "IoU", "Sens.", "Spec.", "AUC", f"HD95 ({unit})"), per_image),
        ]
    )


def write_segmentation_report(
    path: Path,
    config: dict,
    dataset: SegmentationDataset,
    metrics: dict,
    split: str,
    figures: dict,
    overlays: list,
) -> Path:
    """One self-contained HTML page (written to a sibling and renamed: never half a report)."""
    title = f"medsight segmentation run: {config['model']} on {dataset.name}"
    overlay_plots = {f"overlay: {Path(p).stem}": p for p in overlays}
    body = [
        f"<h1>{html.escape(title)}</h1>",
        _data_section(dataset.info()),
        _results_section(metrics, split),
        _plots_section(figures),
        "<h2>Overlays</h2><p>Each image: the photograph, the reference mask, the prediction, and the "
        "errors (white: found, red: false positive, blue: missed); yellow: the region of interest.</p>",
        _plots_section(overlay_plots).replace("<h2>Plots</h2>", ""),
        _config_section(config),
        _notes_section(
            [
                f"Metrics on the {split} split were computed once, after training; the checkpoint (best "
                "validation Dice) and the threshold were chosen on the validation split.",
                f"Hausdorff distances are in {UNIT_WORDS[metrics['hd95_unit']]}; they are undefined (n/a) "
                "for an image with an empty prediction.",
            ]
        ),
    ]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
        + "\n".join(b for b in body if b)
        + "\n</body></html>\n"
    )
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path
