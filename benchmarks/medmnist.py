"""Benchmark medsight's defaults on MedMNIST: PneumoniaMNIST (2D) and AdrenalMNIST3D (3D).

Trains and evaluates each data set with the default settings over several seeds, prints
mean ± sd of test AUC and accuracy with the wall time per run, and writes the table into
BENCHMARKS.md beside the MedMNIST v2 paper's figures. Model selection and the threshold use
validation only; test is looked at once per run.

    MEDSIGHT_DATA=../shared/data python benchmarks/medmnist.py [--seeds 0 1 2] [--datasets ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from benchmark_sections import add_output_options, machine, publish

from medsight.train.config import TrainConfig
from medsight.workflows import train_and_evaluate

# MedMNIST v2 (Yang et al., Scientific Data 2023), Table: test AUC / ACC
PAPER = {
    "pneumoniamnist": [
        ("ResNet-18 (28)", 0.944, 0.854),
        ("ResNet-18 (224)", 0.956, 0.864),
        ("ResNet-50 (28)", 0.948, 0.854),
        ("ResNet-50 (224)", 0.962, 0.884),
        ("auto-sklearn", 0.942, 0.855),
        ("AutoKeras", 0.947, 0.878),
        ("Google AutoML Vision", 0.991, 0.946),
    ],
    "adrenalmnist3d": [
        ("ResNet-18 + 2.5D", 0.772, 0.732),
        ("ResNet-18 + 3D", 0.827, 0.721),
        ("ResNet-18 + ACS", 0.839, 0.754),
        ("ResNet-50 + 2.5D", 0.732, 0.763),
        ("ResNet-50 + 3D", 0.828, 0.745),
        ("ResNet-50 + ACS", 0.818, 0.758),
        ("auto-sklearn", 0.828, 0.802),
        ("AutoKeras", 0.705, 0.778),
    ],
}
TARGETS = {"pneumoniamnist": (0.975, 0.91), "adrenalmnist3d": (0.88, 0.82)}
MARKER = "<!-- medmnist-benchmark -->"


def run_one(dataset: str, seed: int, workdir: Path) -> dict:
    started = time.perf_counter()
    metrics = train_and_evaluate(
        TrainConfig(dataset=dataset, seed=seed), workdir / f"{dataset}-seed{seed}", log=lambda _: None
    )
    test = metrics["test"]
    return {
        "seed": seed,
        "auc": test["auc"],
        "acc": test["acc"],
        "acc_at_0_5": test["acc_at_0_5"],
        "sensitivity": test["sensitivity"],
        "specificity": test["specificity"],
        "val_auc": metrics["val"]["auc"],
        "seconds": time.perf_counter() - started,
        "epochs": metrics["training"]["epochs_trained"],
        "best_epoch": metrics["training"]["best_epoch"],
    }


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def table(dataset: str, runs: list[dict]) -> str:
    auc_t, acc_t = TARGETS[dataset]
    lines = [
        f"### {dataset}",
        "",
        "| seed | val AUC | test AUC | test ACC (val threshold) | test ACC @0.5 | sensitivity | specificity "
        "| epochs (best) | wall time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['seed']} | {r['val_auc']:.3f} | {r['auc']:.3f} | {r['acc']:.3f} | {r['acc_at_0_5']:.3f} "
            f"| {r['sensitivity']:.3f} | {r['specificity']:.3f} | {r['epochs']} ({r['best_epoch']}) "
            f"| {r['seconds'] / 60:.1f} min |"
        )
    lines.append(
        f"| **mean ± sd** | {mean_sd([r['val_auc'] for r in runs])} | **{mean_sd([r['auc'] for r in runs])}** "
        f"| **{mean_sd([r['acc'] for r in runs])}** | {mean_sd([r['acc_at_0_5'] for r in runs])} "
        f"| {mean_sd([r['sensitivity'] for r in runs])} | {mean_sd([r['specificity'] for r in runs])} | "
        f"| {mean_sd([r['seconds'] / 60 for r in runs])} min |"
    )
    lines += [
        "",
        f"Target: test AUC ≥ {auc_t} and ACC ≥ {acc_t}, each seed ≤ 10 min on 2 CPU cores.",
        "",
        "MedMNIST v2 paper (test AUC / ACC at 0.5):",
        "",
        "| method | AUC | ACC |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {auc:.3f} | {acc:.3f} |" for name, auc, acc in PAPER[dataset]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    add_output_options(parser)
    args = parser.parse_args()
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="medsight-bench-") as tmp:
        for dataset in args.datasets:
            results[dataset] = []
            for seed in args.seeds:
                run = run_one(dataset, seed, Path(tmp))
                print(json.dumps({"dataset": dataset, **run}), flush=True)
                results[dataset].append(run)
    command = (
        "MEDSIGHT_DATA=../shared/data .venv/bin/python benchmarks/medmnist.py "
        + f"--datasets {' '.join(args.datasets)} --seeds {' '.join(map(str, args.seeds))}"
    )
    threads = f"network threads: {torch.get_num_threads()}, one more core augments"
    section = (
        f"## MedMNIST with the defaults\n\nCommand: `{command}`  \nMachine: {machine()} ({threads})\n\n"
        + "\n".join(table(d, runs) for d, runs in results.items())
    )
    publish(args, section, MARKER, results)


if __name__ == "__main__":
    main()
