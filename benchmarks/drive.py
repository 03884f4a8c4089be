"""Benchmark medsight's segmentation defaults on DRIVE retinal vessels.

Trains on DRIVE's ``training`` images (16 for training, 4 held out, seeded, for validation) with
the default settings, then evaluates once on the 20 ``test`` images against the first observer's
manual segmentation (``1st_manual``) inside the field-of-view mask: the standard protocol. The
checkpoint and the probability threshold are chosen on the validation images only. Prints test
Dice, IoU, sensitivity, specificity, pixel AUC and HD95 with 95% CIs, and the wall times, and
writes the table into BENCHMARKS.md beside published figures.

    MEDSIGHT_DATA=../shared/data python benchmarks/drive.py [--seeds 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from benchmark_sections import add_output_options, machine, publish

from medsight.evaluate.run import evaluate_run
from medsight.train.config import TrainConfig
from medsight.train.engine import fit

# published test-set F1 (= Dice) on DRIVE, 1st observer, inside the FOV
PUBLISHED = [
    ("U-Net (Ronneberger et al. 2015), as reported by Alom et al. 2018", 0.8142),
    ("R2U-Net (Alom et al. 2018)", 0.8171),
    ("SA-UNet (Guo et al. 2020)", 0.8263),
]
TARGET_DICE, TARGET_MINUTES = 0.80, 15.0
MARKER = "<!-- drive-benchmark -->"
KEYS = ("dice", "iou", "sensitivity", "specificity", "auc", "hd95")


def run_one(seed: int, workdir: Path) -> dict:
    run = workdir / f"drive-seed{seed}"
    started = time.perf_counter()
    fit(TrainConfig(dataset="drive", task="segmentation", seed=seed), run, log=print)
    trained = time.perf_counter()
    metrics = evaluate_run(run, log=print)
    test = metrics["test"]
    return {
        "seed": seed,
        **{k: test[k] for k in KEYS},
        "hd95_unit": metrics["hd95_unit"],
        "ci": {k: test["ci"].get(k) for k in KEYS},
        "val_dice": metrics["val"]["dice"],
        "threshold": metrics["threshold"],
        "train_minutes": (trained - started) / 60,
        "evaluate_minutes": (time.perf_counter() - trained) / 60,
        "epochs": metrics["training"]["epochs_trained"],
        "best_epoch": metrics["training"]["best_epoch"],
    }


def second_observer_dice() -> float | None:
    """Mean per-image Dice of DRIVE's 2nd observer against the 1st, inside the FOV: the human yardstick."""
    import numpy as np

    from medsight.data.segmentation import binary_mask, read_any_image
    from medsight.data.segmentation_registry import built_in_location

    root = built_in_location("drive")
    if root is None or not (root / "test" / "2nd_manual").is_dir():
        return None
    dice = []
    for first in sorted((root / "test" / "1st_manual").iterdir()):
        number = first.name.split("_")[0]
        second = root / "test" / "2nd_manual" / f"{number}_manual2.gif"
        fov = root / "test" / "mask" / f"{number}_test_mask.gif"
        a, b, inside = (binary_mask(read_any_image(p), p) > 0 for p in (first, second, fov))
        a, b = a[inside], b[inside]
        dice.append(2 * np.sum(a & b) / (a.sum() + b.sum()))
    return float(np.mean(dice))


def _ci(run: dict, key: str) -> str:
    ci = run["ci"].get(key)
    return f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def table(runs: list[dict], human: float | None) -> str:
    lines = [
        "| seed | val Dice | test Dice [95% CI] | IoU | sensitivity | specificity | pixel AUC "
        f"| HD95 ({runs[0]['hd95_unit']}) "
        "| threshold | epochs (best) | training | evaluation |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['seed']} | {r['val_dice']:.3f} | **{r['dice']:.3f}**{_ci(r, 'dice')} | {r['iou']:.3f} "
            f"| {r['sensitivity']:.3f} | {r['specificity']:.3f} | {r['auc']:.3f} | {r['hd95']:.1f} "
            f"| {r['threshold']:.2f} | {r['epochs']} ({r['best_epoch']}) | {r['train_minutes']:.1f} min "
            f"| {r['evaluate_minutes']:.1f} min |"
        )
    if len(runs) > 1:
        lines.append(
            f"| **mean ± sd** | {mean_sd([r['val_dice'] for r in runs])} | **{mean_sd([r['dice'] for r in runs])}** "
            f"| {mean_sd([r['iou'] for r in runs])} | {mean_sd([r['sensitivity'] for r in runs])} "
            f"| {mean_sd([r['specificity'] for r in runs])} | {mean_sd([r['auc'] for r in runs])} | | | "
            f"| {mean_sd([r['train_minutes'] for r in runs])} min | |"
        )
    lines += [
        "",
        f"Target: test Dice ≥ {TARGET_DICE} inside the field of view, training ≤ {TARGET_MINUTES:g} min on "
        "2 CPU cores. Metrics are per image, averaged over the 20 test images; CIs bootstrap the images.",
        "",
        "Published (test Dice / F1, 1st observer, inside the FOV):",
        "",
        "| method | Dice |",
        "|---|---|",
    ]
    lines += [f"| {name} | {dice:.4f} |" for name, dice in PUBLISHED]
    if human is not None:
        lines.append(f"| 2nd human observer vs 1st (computed here from `test/2nd_manual`) | {human:.4f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    add_output_options(parser)
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory(prefix="medsight-drive-") as tmp:
        for seed in args.seeds:
            runs.append(run_one(seed, Path(tmp)))
            print(json.dumps(runs[-1]), flush=True)
    command = (
        "MEDSIGHT_DATA=../shared/data .venv/bin/python benchmarks/drive.py "
        f"--seeds {' '.join(map(str, args.seeds))}"
    )
    section = (
        "## DRIVE retinal vessel segmentation with the defaults\n\n"
        f"Command: `{command}`  \nMachine: {machine()}\n\n"
        "Data: DRIVE (Staal et al., IEEE TMI 2004); train on `training` (16 + 4 validation), report on "
        "`test` vs `1st_manual` inside the FOV mask.\n\n" + table(runs, second_observer_dice())
    )
    publish(args, section, MARKER, runs)


if __name__ == "__main__":
    main()
