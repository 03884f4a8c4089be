"""Judge a segmentation run: per-image metrics inside the region of interest, means with CIs.

Per image (MONAI metrics, counted only inside the ROI, e.g. DRIVE's field of view): Dice, IoU,
sensitivity, specificity, pixel AUC and the 95th-percentile Hausdorff distance: in millimetres
when every image of the data set carries its pixel size (DICOM, NIfTI), in pixels otherwise (PNG,
TIFF; a run never mixes the two). Each is averaged over images, with a percentile bootstrap CI
over images (``metrics.bootstrap_ci``). The probability threshold is chosen on the validation
images only (the one that maximises their mean Dice); the test images are looked at once.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml
from monai.metrics import (
    compute_confusion_matrix_metric,
    compute_hausdorff_distance,
    compute_roc_auc,
    get_confusion_matrix,
)

from medsight.data.segmentation import SegmentationDataset, SegmentationSplit
from medsight.data.segmentation_registry import load_segmentation_dataset
from medsight.evaluate.metrics import bootstrap_ci
from medsight.progress import progress_bar
from medsight.train.run_folder import atomic_write_text, read_status, require_run, set_status
from medsight.train.segmentation_inference import Segmenter, load_segmenter

Log = Callable[[str], None]
METRICS = ("dice", "iou", "sensitivity", "specificity", "auc", "hd95")
THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.01), 2)


def _clean(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None


def image_metrics(
    probs: np.ndarray,
    mask: np.ndarray,
    roi: np.ndarray | None,
    threshold: float,
    spacing: tuple[float, ...] | None = None,
) -> dict[str, float | None]:
    """Every metric of one image, counted inside ``roi`` (the whole image without one).

    ``spacing`` (mm per pixel, array order) puts HD95 in millimetres; without it, in pixels.
    """
    inside = np.ones(mask.shape, dtype=bool) if roi is None else roi > 0
    predicted = probs >= threshold
    truth = mask > 0
    flat = [torch.as_tensor(a[inside], dtype=torch.float32).view(1, 1, -1) for a in (predicted, truth)]
    confusion = get_confusion_matrix(flat[0], flat[1])
    result = {
        name: _clean(compute_confusion_matrix_metric(monai_name, confusion).item())
        for name, monai_name in (
            ("dice", "f1 score"),
            ("iou", "threat score"),
            ("sensitivity", "sensitivity"),
            ("specificity", "specificity"),
        )
    }
    scores, labels = torch.as_tensor(probs[inside]), torch.as_tensor(truth[inside].astype(np.int64))
    result["auc"] = (
        _clean(compute_roc_auc(scores, labels)) if 0 < int(labels.sum()) < labels.numel() else None
    )
    result["hd95"] = hd95(predicted & inside, truth & inside, spacing)
    return result


def hd95(predicted: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...] | None = None) -> float | None:
    """95th-percentile symmetric Hausdorff distance; None when either mask is empty.

    In millimetres with ``spacing`` (mm per pixel along each array axis), in pixels without.
    """
    if not predicted.any() or not truth.any():
        return None
    as_batch = [torch.as_tensor(a[None, None].astype(np.float32)) for a in (predicted, truth)]
    with warnings.catch_warnings():  # MONAI 1.5+ warns about its own internal argument
        warnings.simplefilter("ignore", FutureWarning)
        distance = compute_hausdorff_distance(
            *as_batch, include_background=True, percentile=95, spacing=list(spacing) if spacing else None
        )
    return _clean(distance.item())


def hd95_unit(dataset: SegmentationDataset) -> str:
    """The HD95 unit of a data set: mm when every image carries its pixel size, else px for all.

    One unit per run: a mean of millimetres and pixels would mean nothing.
    """
    every = [s for split in dataset.splits.values() for s in split.spacings]
    return "mm" if every and all(s is not None for s in every) else "px"


def choose_threshold(probs: list[np.ndarray], split: SegmentationSplit) -> float:
    """The threshold (0.05 ... 0.95) that maximises the mean Dice of the validation images.

    Counted from histograms of each image's in-ROI probabilities, so every threshold costs nothing
    more; among equal Dice the one nearest 0.5 wins.
    """
    edges = np.concatenate([[-np.inf], THRESHOLDS, [np.inf]])
    dice = np.zeros(len(THRESHOLDS))
    for p, mask, roi in zip(probs, split.masks, split.rois, strict=True):
        inside = np.ones(mask.shape, dtype=bool) if roi is None else roi > 0
        scores, truth = p[inside], mask[inside] > 0
        # pixels at or above each threshold: reverse cumulative histogram counts
        pos = np.cumsum(np.histogram(scores[truth], edges)[0][::-1])[::-1][1:]
        neg = np.cumsum(np.histogram(scores[~truth], edges)[0][::-1])[::-1][1:]
        tp, fp, fn = pos, neg, truth.sum() - pos
        dice += 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    best = np.flatnonzero(dice >= dice.max() - 1e-9)
    return float(THRESHOLDS[best[np.argmin(np.abs(THRESHOLDS[best] - 0.5))]])


def _mean(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def _resample_means(labels: np.ndarray, rows: np.ndarray) -> dict[str, float | None]:
    """Mean of each metric column over the resampled images (NaN marks an undefined value)."""
    return {
        name: _clean(np.nanmean(rows[:, k])) if not np.isnan(rows[:, k]).all() else None
        for k, name in enumerate(METRICS)
    }


def summarise(per_image: list[dict], n_boot: int, seed: int) -> dict:
    """Means over images of every metric, with 95% percentile-bootstrap CIs over images."""
    table = np.array(
        [[np.nan if row[m] is None else row[m] for m in METRICS] for row in per_image], dtype=np.float64
    )
    summary: dict = {m: _mean([row[m] for row in per_image]) for m in METRICS}
    summary["ci"] = bootstrap_ci(
        _resample_means, np.zeros(len(per_image), dtype=np.int64), table, n_boot=n_boot, seed=seed
    )
    summary["n"] = len(per_image)
    summary["n_boot"] = int(n_boot)
    summary["per_image"] = per_image
    return summary


def split_probabilities(segmenter: Segmenter, split: SegmentationSplit, name: str) -> list[np.ndarray]:
    pairs = list(zip(split.images, split.rois, strict=True))
    return [segmenter.probabilities(image, roi) for image, roi in progress_bar(pairs, f"segmenting {name}")]


def evaluate_split(
    probs: list[np.ndarray], split: SegmentationSplit, threshold: float, n_boot: int, seed: int, unit: str
) -> dict:
    """Metrics of every image and their means with CIs; HD95 in ``unit`` ("mm" or "px")."""
    spacings = split.spacings if unit == "mm" else [None] * len(split)
    per_image = [
        {"name": name, **image_metrics(p, mask, roi, threshold, spacing)}
        for p, mask, roi, name, spacing in zip(
            probs, split.masks, split.rois, split.names, spacings, strict=True
        )
    ]
    summary = summarise(per_image, n_boot, seed)
    summary["dice_at_0_5"] = (
        _mean(
            [
                image_metrics(p, m, r, 0.5)["dice"]
                for p, m, r in zip(probs, split.masks, split.rois, strict=True)
            ]
        )
        if threshold != 0.5
        else summary["dice"]
    )
    summary["threshold"] = threshold
    return summary


def evaluate_segmentation_run(run_dir: Path, split: str = "test", *, log: Log = print) -> dict:
    """Evaluate a trained segmentation run; writes metrics.json, overlays, report.html; marks it complete."""
    from medsight.evaluate.segmentation_report import write_segmentation_outputs

    run_dir = require_run(Path(run_dir), "config.yaml", "checkpoint.pt")
    config = yaml.safe_load((run_dir / "config.yaml").read_text())["config"]
    segmenter = load_segmenter(run_dir)
    dataset = load_segmentation_dataset(config["dataset"])
    n_boot, seed = int(config.get("bootstrap", 1000)), int(config.get("seed", 0))
    probs = {
        name: split_probabilities(segmenter, dataset.splits[name], name)
        for name in dict.fromkeys(("val", split))
    }
    threshold = choose_threshold(probs["val"], dataset.splits["val"])
    metrics: dict = {
        "task": "segmentation",
        "dataset": dataset.name,
        "model": config["model"],
        "threshold": threshold,
        "threshold_rule": "mean Dice, chosen on the validation split only",
        "region_of_interest": any(r is not None for r in dataset.splits[split].rois),
        "hd95_unit": hd95_unit(dataset),
    }
    for name in probs:
        metrics[name] = evaluate_split(
            probs[name], dataset.splits[name], threshold, n_boot, seed, metrics["hd95_unit"]
        )
    status = read_status(run_dir)
    metrics["training"] = {
        k: status.get(k) for k in ("epochs_trained", "best_epoch", "train_seconds", "stopped")
    }
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    report = write_segmentation_outputs(run_dir, config, dataset, split, probs[split], metrics)
    set_status(run_dir, "complete", report=str(report))
    log(summary_line(metrics, split))
    log(f"report: {report}")
    return metrics


def summary_line(metrics: dict, split: str) -> str:
    m = metrics[split]
    parts = []
    for key, label in (
        ("dice", "Dice"),
        ("iou", "IoU"),
        ("sensitivity", "sens"),
        ("specificity", "spec"),
        ("auc", "AUC"),
    ):
        ci = m["ci"].get(key) or [None, None]
        ci_text = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci[0] is not None else ""
        value = "n/a" if m.get(key) is None else f"{m[key]:.3f}"
        parts.append(f"{label} {value}{ci_text}")
    hd = m.get("hd95")
    parts.append(f"HD95 {hd:.1f} {metrics['hd95_unit']}" if hd is not None else "HD95 n/a")
    return f"{split} ({m['n']} images, threshold {metrics['threshold']:.2f} from val): " + "  ".join(parts)
