"""Benchmark PVC detection on MIT-BIH with an inter-patient split (``mitdb-pvc``).

Trains and evaluates the data set with medsight's defaults (or ``--model``) over several seeds;
the records of each split are fixed by the data set (seeded, stratified by PVC burden, no record
in two splits). Model selection and the operating threshold use the validation records only;
the test records are looked at once per run. Prints mean ± sd of test sensitivity and PPV of
PVCs and the per-record table, and writes them into BENCHMARKS.md.

    MEDSIGHT_DATA=../shared/data python benchmarks/ecg.py [--seeds 0 1 2] [--model cnn1d]

To try a change without looking at the test records, register a development split of the other
records and run on it without writing BENCHMARKS.md, e.g. with record 108 and 114 held out:

    medsight data import ../shared/data/ecg/mitdb --name mitdb-dev --train-records 100,102,119,123,200 \
        --val-records 106,121 --test-records 108,114
    python benchmarks/ecg.py --dataset mitdb-dev --no-write
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from benchmark_sections import add_output_options, machine, publish

from medsight.data.registry import load_dataset
from medsight.train.config import TrainConfig, load_config
from medsight.workflows import train_and_evaluate

DATASET = "mitdb-pvc"
TARGET = {"sensitivity": 0.95, "ppv": 0.90}  # issue 6, on the test records
MARKER = "<!-- ecg-benchmark -->"
# F1 on the validation records balances sensitivity against PPV; Youden's J ignores prevalence and,
# with PVCs ~10% of beats, picked thresholds that cost PPV (validation: PPV 0.951 vs 0.984)
THRESHOLD_RULE = "f1"


def run_one(
    dataset: str, seed: int, model: str | None, epochs: int | None, workdir: Path, settings: dict
) -> dict:
    started = time.perf_counter()
    chosen = {"threshold_rule": THRESHOLD_RULE, **settings, **({"model": model} if model else {})}
    config = TrainConfig(dataset=dataset, seed=seed, **chosen)
    if epochs:
        config = config.model_copy(update={"epochs": epochs})
    metrics = train_and_evaluate(config, workdir / f"ecg-seed{seed}", log=lambda _: None)
    ecg = metrics["ecg"]
    return {
        "seed": seed,
        "model": metrics["model"],
        "threshold": metrics["threshold"],
        "val_auc": metrics["val"]["auc"],
        "test_auc": metrics["test"]["auc"],
        **{f"val_{k}": ecg["val"][k] for k in ("sensitivity", "ppv")},
        **{f"test_{k}": ecg["test"][k] for k in ("sensitivity", "ppv")},
        "per_record": ecg["test"]["per_record"] + ecg["val"]["per_record"],
        "seconds": time.perf_counter() - started,
        "epochs": metrics["training"]["epochs_trained"],
        "best_epoch": metrics["training"]["best_epoch"],
    }


def mean_sd(values: list[float | None], digits: int = 3) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "n/a"
    sd = statistics.stdev(present) if len(present) > 1 else 0.0
    return f"{statistics.mean(present):.{digits}f} ± {sd:.{digits}f}"


def runs_table(runs: list[dict]) -> list[str]:
    lines = [
        "| seed | val AUC | val sens | val PPV | threshold (val) | test AUC | **test sens** | **test PPV** "
        "| epochs (best) | wall time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['seed']} | {r['val_auc']:.3f} | {r['val_sensitivity']:.3f} | {r['val_ppv']:.3f} "
            f"| {r['threshold']:.3f} | {r['test_auc']:.3f} | {r['test_sensitivity']:.3f} | {r['test_ppv']:.3f} "
            f"| {r['epochs']} ({r['best_epoch']}) | {r['seconds'] / 60:.1f} min |"
        )
    keys = ("val_auc", "val_sensitivity", "val_ppv", "threshold", "test_auc", "test_sensitivity", "test_ppv")
    cells = [mean_sd([r[k] for r in runs]) for k in keys]
    cells[5], cells[6] = f"**{cells[5]}**", f"**{cells[6]}**"
    lines.append(
        f"| **mean ± sd** | {' | '.join(cells)} | | {mean_sd([r['seconds'] / 60 for r in runs], digits=1)} min |"
    )
    return lines


def record_table(runs: list[dict], splits: dict[str, list[str]]) -> list[str]:
    """Per record, over the seeds: beats, PVCs, mean ± sd of sensitivity, PPV and false alarms."""
    split_of = {record: name for name, records in splits.items() for record in records}
    lines = [
        "| record | split | beats | PVCs | sensitivity | PPV | false alarms |",
        "|---|---|---|---|---|---|---|",
    ]
    names = sorted(
        {row["record"] for r in runs for row in r["per_record"]}, key=lambda n: (split_of[n] != "test", n)
    )
    for name in names:
        rows = [row for r in runs for row in r["per_record"] if row["record"] == name]
        lines.append(
            f"| {name} | {split_of[name]} | {rows[0]['beats']} | {rows[0]['pvcs']} "
            f"| {mean_sd([x['sensitivity'] for x in rows])} | {mean_sd([x['ppv'] for x in rows])} "
            f"| {mean_sd([x['fp'] for x in rows], digits=1)} |"
        )
    return lines


def section(
    runs: list[dict], splits: dict[str, list[str]], command: str, machine: str, dataset: str, settings: dict
) -> str:
    changed = ", ".join(f"{k} {v}" for k, v in settings.items())
    others = f"settings changed: {changed}; every other" if changed else "every other"
    title = "MIT-BIH" if dataset == DATASET else dataset
    lines = [
        f"## ECG: PVC vs other beats, inter-patient ({title})",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine}",
        "",
        f"Model: {runs[0]['model']}. Records (whole patients; none in two splits): "
        + "; ".join(f"{name} {', '.join(records)}" for name, records in splits.items())
        + f". Sensitivity and PPV of the PVC class at the threshold chosen on the validation records "
        f"({settings.get('threshold_rule', THRESHOLD_RULE)} rule); {others} setting is medsight's default.",
        "",
        *runs_table(runs),
        "",
        f"Target (issue 6): test sensitivity ≥ {TARGET['sensitivity']} and PPV ≥ {TARGET['ppv']}.",
        "",
        "Per record (test records first), mean ± sd over the seeds:",
        "",
        *record_table(runs, splits),
        "",
        "Published inter-patient results (e.g. de Chazal et al., IEEE TBME 2004, on the 44-record DS1/DS2 "
        "split) use other records and more of them: not directly comparable.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--model", help="a 1D model (cnn1d, lstm, gru, cnn-gru); default: medsight's")
    parser.add_argument("--epochs", type=int, help="default: derived from the data")
    parser.add_argument(
        "--dataset",
        default=DATASET,
        help="an ECG data set: mitdb-pvc, or one imported with its own record split (development runs)",
    )
    parser.add_argument(
        "--config", type=Path, help="a YAML file of training settings to try (medsight train's keys)"
    )
    add_output_options(parser)
    args = parser.parse_args()
    settings = (
        load_config(args.config, {"dataset": args.dataset}).model_dump(exclude_unset=True)
        if args.config
        else {}
    )
    settings.pop("dataset", None)
    splits = load_dataset(args.dataset).extra["ecg"]["records"]
    runs = []
    with tempfile.TemporaryDirectory(prefix="medsight-bench-ecg-") as tmp:
        for seed in args.seeds:
            run = run_one(args.dataset, seed, args.model, args.epochs, Path(tmp), settings)
            print(json.dumps({k: v for k, v in run.items() if k != "per_record"}), flush=True)
            runs.append(run)
    command = "MEDSIGHT_DATA=../shared/data .venv/bin/python benchmarks/ecg.py --seeds " + " ".join(
        map(str, args.seeds)
    )
    command += (
        (f" --dataset {args.dataset}" if args.dataset != DATASET else "")
        + (f" --model {args.model}" if args.model else "")
        + (f" --epochs {args.epochs}" if args.epochs else "")
        + (f" --config {args.config}" if args.config else "")
    )
    publish(args, section(runs, splits, command, machine(), args.dataset, settings), MARKER, runs)


if __name__ == "__main__":
    main()
