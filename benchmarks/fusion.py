"""Does fusion help? ECG beats (signal) with and without RR-interval features (tabular), MIT-BIH.

PVC vs other beats, inter-patient split by record (``mitdb-pvc-rr``: train 6 records, validation 3,
test 3; ``medsight data info mitdb-pvc-rr``). Every arm trains the same 1D CNN (``cnn1d``) with the
same resolved defaults; only the inputs differ:

- ``signal``: the beat waveform alone (``model_options: {fusion: none}``);
- ``feature``: waveform embedding ⊕ an MLP over the 6 RR features (feature-level fusion);
- ``late``: the mean of a waveform model's and an RR model's probabilities, weight learned;
- ``channels`` (reference, ``--reference``): ``mitdb-pvc``, where the RR ratios enter as constant
  input channels (the ECG module's own design).

Per arm: mean ± sd over seeds of test AUC, sensitivity and PPV at the threshold chosen on
validation, validation AUC, and each run's 95% bootstrap CI; per seed, a paired bootstrap of the
test-AUC difference against ``signal`` (same beats resampled for both). Beats cluster within only
3 test records, so a bootstrap over beats understates the uncertainty: read the seed spread and
the validation/test agreement too.

    MEDSIGHT_DATA=../shared/data .venv/bin/python benchmarks/fusion.py [--seeds 0 1 2] [--reference]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from benchmark_sections import add_output_options, machine, publish

from medsight.data.registry import load_dataset
from medsight.evaluate.metrics import rank_auc
from medsight.train.config import TrainConfig
from medsight.train.inference import load_trained_model
from medsight.workflows import train_and_evaluate

ARMS = {
    "signal": ("mitdb-pvc-rr", {"fusion": "none"}),
    "feature": ("mitdb-pvc-rr", {"fusion": "feature"}),
    "late": ("mitdb-pvc-rr", {"fusion": "late"}),
    "channels": ("mitdb-pvc", {}),
}
MARKER = "<!-- fusion-benchmark -->"
N_PAIRED = 2000


def run_one(arm: str, seed: int, workdir: Path, overrides: dict) -> dict:
    dataset, options = ARMS[arm]
    run_dir = workdir / f"{arm}-seed{seed}"
    started = time.perf_counter()
    config = TrainConfig(dataset=dataset, seed=seed, model="cnn1d", model_options=options, **overrides)
    metrics = train_and_evaluate(config, run_dir, explain=False, log=lambda _: None)
    test = metrics["test"]
    with np.load(run_dir / "predictions.npz") as saved:
        probs, labels = saved["test_probs"][:, 1], saved["test_labels"]
    weights = getattr(load_trained_model(run_dir).model, "image_weights", lambda: None)()
    return {
        "arm": arm,
        "seed": seed,
        "auc": test["auc"],
        "auc_ci": test["ci"]["auc"],
        "sensitivity": test["sensitivity"],
        "ppv": test["ppv"],
        "val_auc": metrics["val"]["auc"],
        "threshold_rule": metrics["threshold_rule"],
        "epochs": metrics["training"]["epochs_trained"],
        "seconds": time.perf_counter() - started,
        "signal_weight": weights[0] if weights else None,
        "_probs": probs,
        "_labels": labels,
    }


def paired_auc_difference(labels: np.ndarray, a: np.ndarray, b: np.ndarray, seed: int) -> list[float]:
    """95% CI of AUC(a) - AUC(b) on the same beats, resampled within each class (as the CIs are)."""
    rng = np.random.default_rng(seed)
    positives, negatives = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    diffs = []
    for _ in range(N_PAIRED):
        pick = np.concatenate([rng.choice(positives, len(positives)), rng.choice(negatives, len(negatives))])
        diffs.append(rank_auc(labels[pick], a[pick]) - rank_auc(labels[pick], b[pick]))
    return [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))]


def add_paired(runs: list[dict]) -> None:
    """Each run's test-AUC difference to the ``signal`` run of the same seed, with a paired CI."""
    signal = {r["seed"]: r for r in runs if r["arm"] == "signal"}
    for run in runs:
        base = signal.get(run["seed"])
        if run["arm"] == "signal" or base is None or not np.array_equal(run["_labels"], base["_labels"]):
            continue
        run["delta_auc"] = run["auc"] - base["auc"]
        run["delta_ci"] = paired_auc_difference(run["_labels"], run["_probs"], base["_probs"], run["seed"])


def mean_sd(values: list[float | None]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    if len(values) == 1:  # one seed: no spread to report
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def _ci(ci: list[float] | None, signed: bool = False) -> str:
    if not ci:
        return ""
    return f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if signed else f" [{ci[0]:.3f}, {ci[1]:.3f}]"


def table(runs: list[dict], arms: list[str]) -> str:
    lines = [
        "| arm | seed | val AUC | test AUC [95% CI] | Δ test AUC vs signal [paired 95% CI] "
        "| sensitivity | PPV | signal weight (late) | epochs | wall time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm in arms:
        mine = [r for r in runs if r["arm"] == arm]
        for r in mine:
            delta = f"{r['delta_auc']:+.3f}{_ci(r['delta_ci'], True)}" if "delta_auc" in r else "—"
            weight = f"{r['signal_weight']:.2f}" if r["signal_weight"] is not None else "—"
            lines.append(
                f"| {arm} | {r['seed']} | {r['val_auc']:.3f} | {r['auc']:.3f}{_ci(r['auc_ci'])} | {delta} "
                f"| {r['sensitivity']:.3f} | {r['ppv']:.3f} | {weight} | {r['epochs']} | {r['seconds'] / 60:.1f} min |"
            )
        deltas = [r.get("delta_auc") for r in mine]
        lines.append(
            f"| **{arm}: mean ± sd** | | {mean_sd([r['val_auc'] for r in mine])} "
            f"| **{mean_sd([r['auc'] for r in mine])}** | {mean_sd(deltas)} "
            f"| {mean_sd([r['sensitivity'] for r in mine])} | {mean_sd([r['ppv'] for r in mine])} | | | |"
        )
    return "\n".join(lines) + "\n"


def verdict(runs: list[dict]) -> str:
    """One plain sentence per fusion arm: does every seed's paired CI exclude zero, and which way?"""
    lines = []
    for arm in ("feature", "late", "channels"):
        mine = [r for r in runs if r["arm"] == arm and "delta_ci" in r]
        if not mine:
            continue
        above = sum(r["delta_ci"][0] > 0 for r in mine)
        below = sum(r["delta_ci"][1] < 0 for r in mine)
        mean = statistics.mean(r["delta_auc"] for r in mine)
        if above == len(mine):
            word = "better than the signal alone in every seed"
        elif below == len(mine):
            word = "worse than the signal alone in every seed"
        else:
            word = f"not consistently different from the signal alone ({above} seed(s) better, {below} worse)"
        lines.append(f"- **{arm}**: mean Δ test AUC {mean:+.3f}; {word} (paired bootstrap over test beats).")
    return "\n".join(lines)


def data_line(runs: list[dict]) -> str:
    """The records of each split and the test beats, read from the data set, and the threshold rule."""
    dataset = load_dataset(ARMS["signal"][0])
    records = dataset.extra["ecg"]["records"]
    test = dataset.splits["test"].labels
    positive = dataset.classes[1]
    rules = sorted({r["threshold_rule"] for r in runs})
    return (
        f"Test records {', '.join(records['test'])} ({int((test == 1).sum())} {positive.upper()} of {len(test)} "
        f"beats); validation records {', '.join(records['val'])}; training records "
        f"{', '.join(records['train'])}. Threshold (sensitivity, PPV): {'; '.join(rules)}. "
        "CIs: 95% stratified bootstrap over test beats.\n\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=["signal", "feature", "late"], choices=list(ARMS))
    parser.add_argument("--reference", action="store_true", help="also train the 'channels' arm (mitdb-pvc)")
    parser.add_argument("--epochs", type=int, help="override the resolved epochs (short development runs)")
    add_output_options(parser)
    args = parser.parse_args()
    arms = list(dict.fromkeys(args.arms + (["channels"] if args.reference else [])))
    overrides = {"bootstrap": 1000} | ({"epochs": args.epochs} if args.epochs else {})
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="medsight-fusion-") as tmp:
        for seed in args.seeds:
            for arm in arms:
                run = run_one(arm, seed, Path(tmp), overrides)
                print(json.dumps({k: v for k, v in run.items() if not k.startswith("_")}), flush=True)
                runs.append(run)
    add_paired(runs)
    command = (
        "MEDSIGHT_DATA=../shared/data .venv/bin/python benchmarks/fusion.py "
        f"--seeds {' '.join(map(str, args.seeds))} --arms {' '.join(args.arms)}"
        + (" --reference" if args.reference else "")
        + (f" --epochs {args.epochs}" if args.epochs else "")
    )
    section = (
        "## Multimodal fusion: ECG beats + RR intervals (MIT-BIH, PVC vs other, inter-patient)\n\n"
        f"Command: `{command}`  \nMachine: {machine()}\n\n"
        + data_line(runs)
        + table(runs, arms)
        + "\n"
        + verdict(runs)
        + "\n"
    )
    publish(args, section, MARKER, [{k: v for k, v in r.items() if not k.startswith("_")} for r in runs])


if __name__ == "__main__":
    main()
