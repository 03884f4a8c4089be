"""Benchmark differentially private training: PneumoniaMNIST test AUC at ε = 1, 3, 8 and without DP.

Every run uses medsight's defaults (the private runs with the changes DP needs: GroupNorm, no EMA,
no class weights, per-sample clipping at 1, δ from the data); one seed each unless --seeds says
otherwise. The ε column is what the accountant says was spent (at most the target; less if training
stopped early). Writes a section between ``<!-- privacy-benchmark -->`` markers in BENCHMARKS.md,
leaving every other section alone.

    MEDSIGHT_DATA=../shared/data .venv/bin/python benchmarks/privacy.py [--epsilons 1 3 8] [--seeds 0]

A quick check that the script works (tiny network, synthetic data, one epoch, written elsewhere):

    .venv/bin/python benchmarks/privacy.py --dataset synthetic --epsilons 8 --epochs 1 --tiny \\
        --out /tmp/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from benchmark_sections import add_output_options, machine, publish

from medsight.train.config import TrainConfig
from medsight.workflows import train_and_evaluate

MARKER = "<!-- privacy-benchmark -->"
TINY = {"image_size": 32, "bootstrap": 200, "model_options": {"widths": [8, 16, 32]}}


def run_one(dataset: str, epsilon: float | None, seed: int, workdir: Path, extra: dict) -> dict:
    started = time.perf_counter()
    name = f"{dataset}-eps{epsilon}-seed{seed}"
    metrics = train_and_evaluate(
        TrainConfig(dataset=dataset, seed=seed, dp_epsilon=epsilon, **extra),
        workdir / name,
        log=lambda _: None,
    )
    status = json.loads((workdir / name / "run.json").read_text())
    return {
        "epsilon_target": epsilon,
        "seed": seed,
        "auc": metrics["test"]["auc"],
        "acc": metrics["test"]["acc"],
        "privacy": status.get("privacy"),
        "epochs": metrics["training"]["epochs_trained"],
        "seconds": time.perf_counter() - started,
    }


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def row(runs: list[dict]) -> str:
    target = runs[0]["epsilon_target"]
    if target is None:
        setting, spent, delta, noise = "not private (defaults)", "∞", "–", "–"
    else:
        p = runs[0]["privacy"]
        setting = f"DP, target ε = {target:g}"
        spent = mean_sd([r["privacy"]["epsilon"] for r in runs])
        delta, noise = f"{p['delta']:g}", f"{p['noise_multiplier']:.2f}"
    return (
        f"| {setting} | {spent} | {delta} | {noise} | **{mean_sd([r['auc'] for r in runs])}** "
        f"| {mean_sd([r['acc'] for r in runs])} | {runs[0]['epochs']} "
        f"| {statistics.mean(r['seconds'] for r in runs) / 60:.1f} min |"
    )


def section(dataset: str, groups: list[list[dict]], command: str, seeds: list[int]) -> str:
    lines = [
        f"## Differential privacy on {dataset}",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine()}; {len(seeds)} seed(s) per row ({', '.join(map(str, seeds))}).",
        "",
        "| setting | ε spent | δ | noise multiplier | test AUC | test ACC (val threshold) | epochs | wall time |",
        "|---|---|---|---|---|---|---|---|",
        *[row(runs) for runs in groups],
        "",
        "DP-SGD with Opacus: Poisson-sampled batches, per-sample gradients clipped to norm 1, Gaussian noise "
        "calibrated to the target ε over the planned epochs; ε spent is the PRV accountant's figure. Private "
        "runs use GroupNorm and no weight EMA or class weights; the non-private row is medsight's default "
        "model (BatchNorm, EMA), so the gap includes those changes as well as the noise.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="pneumoniamnist")
    parser.add_argument("--epsilons", nargs="+", type=float, default=[1.0, 3.0, 8.0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=int, help="override the data-derived epochs (smoke runs)")
    parser.add_argument("--tiny", action="store_true", help="tiny network and 32-pixel inputs (smoke runs)")
    add_output_options(parser)
    args = parser.parse_args()
    extra = {**(TINY if args.tiny else {}), **({"epochs": args.epochs} if args.epochs else {})}
    groups: list[list[dict]] = []
    with tempfile.TemporaryDirectory(prefix="medsight-privacy-bench-") as tmp:
        for epsilon in [None, *sorted(args.epsilons, reverse=True)]:
            groups.append([])
            for seed in args.seeds:
                result = run_one(args.dataset, epsilon, seed, Path(tmp), extra)
                print(json.dumps({"dataset": args.dataset, **result}), flush=True)
                groups[-1].append(result)
    command = (
        f"MEDSIGHT_DATA=../shared/data .venv/bin/python benchmarks/privacy.py --dataset {args.dataset} "
        f"--epsilons {' '.join(f'{e:g}' for e in args.epsilons)} --seeds {' '.join(map(str, args.seeds))}"
        + (f" --epochs {args.epochs}" if args.epochs else "")
        + (" --tiny" if args.tiny else "")
    )
    text = section(args.dataset, groups, command, args.seeds)
    publish(args, text, MARKER, groups)


if __name__ == "__main__":
    main()
