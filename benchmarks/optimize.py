"""Benchmark export, int8 and pruning side by side on one run (PneumoniaMNIST with the defaults).

Trains a run with the default settings (or takes one with --run), exports it to TorchScript and
ONNX (both checked against eager), quantizes it to int8 (static, calibrated on training images),
prunes it (global magnitude, fine-tuned), then runs `medsight bench` on all of them in one
process, so every variant sees the same machine, threads and load. Writes the table and the
issue's targets into BENCHMARKS.md between the ``<!-- optimize-benchmark -->`` markers.

    MEDSIGHT_DATA=../shared/data .venv/bin/python benchmarks/optimize.py [--run RUN] [--seconds 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from benchmark_sections import add_output_options, publish

from medsight.optimize.bench import Timing, bench_run
from medsight.optimize.export import export_run
from medsight.optimize.variants import optimize_run
from medsight.train.config import TrainConfig
from medsight.workflows import train_and_evaluate

MARKER = "<!-- optimize-benchmark -->"
# issue 5's targets, measured side by side on this machine
TARGETS = {
    "ort_vs_eager_throughput": 1.7,
    "int8_vs_ort_throughput": 1.8,
    "int8_vs_fp32_size": 0.3,
    "int8_auc_drop": 0.005,
}


def produce(run: Path, prune: float, finetune_steps: int, timing: Timing) -> dict:
    for fmt in ("torchscript", "onnx"):
        export_run(run, fmt)
    optimize_run(run, quantize_to="int8", prune=prune, finetune_steps=finetune_steps)
    return bench_run(run, timing=timing)


def target_rows(record: dict) -> list[tuple[str, str, str, bool]]:
    rows = {r["variant"]: r for r in record["rows"]}
    eager, fp32 = rows["eager"], rows["onnx-fp32"]
    int8 = rows.get("int8") or rows["int8-dynamic"]
    ort_gain = fp32["throughput"] / eager["throughput"]
    int8_gain = int8["throughput"] / fp32["throughput"]
    size = int8["size_mb"] / fp32["size_mb"]
    drop = eager["test_auc"] - int8["test_auc"]
    return [
        (
            "ORT fp32 vs eager throughput",
            f"{ort_gain:.2f}×",
            f"≥ {TARGETS['ort_vs_eager_throughput']}×",
            ort_gain >= 1.7,
        ),
        (
            "int8 vs ORT fp32 throughput",
            f"{int8_gain:.2f}×",
            f"≥ {TARGETS['int8_vs_ort_throughput']}×",
            int8_gain >= 1.8,
        ),
        ("int8 file vs fp32 file", f"{size:.2f}×", f"≤ {TARGETS['int8_vs_fp32_size']}×", size <= 0.3),
        ("int8 test AUC drop", f"{drop:+.4f}", f"≤ {TARGETS['int8_auc_drop']}", drop <= 0.005),
    ]


def section(record: dict, command: str, dataset: str) -> str:
    m, threads = record["machine"], record["threads"]
    lines = [
        f"## Export, int8 and pruning ({dataset})",
        "",
        f"Command: `{command}`  ",
        f"Machine: {m['cpu']} ({m.get('int8_instructions', 'instruction set not recorded')}), {m['cores']} cores, torch {m['torch']} ({threads['torch']} threads), "
        f"ONNX Runtime {m['onnxruntime']} ({threads['onnxruntime_intra_op']} intra-op threads), {m['date']}",
        "",
        "| variant | size (MB) | p50 latency, batch 1 (ms) | p99 (ms) | throughput, batch 64 (images/s) | test AUC |",
        "|---|---|---|---|---|---|",
    ]
    for r in record["rows"]:
        auc = "n/a" if r["test_auc"] is None else f"{r['test_auc']:.4f}"
        lines.append(
            f"| {r['variant']} | {r['size_mb']:.3f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} "
            f"| {r['throughput']:.0f} | {auc} |"
        )
    lines += ["", "| target (issue 5) | measured | target | met |", "|---|---|---|---|"]
    lines += [
        f"| {name} | {got} | {want} | {'yes' if ok else '**no**'} |"
        for name, got, want, ok in target_rows(record)
    ]
    serving = record["serving"]
    lines += [
        "",
        f"Serving uses **{serving['variant']}**: {serving['reason']}.",
        "Pruned variants run as dense eager PyTorch: their zeros shrink neither the file nor the time.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, help="benchmark this trained run instead of training one")
    parser.add_argument("--dataset", default="pneumoniamnist")
    parser.add_argument("--epochs", type=int, help="training epochs (default: from the data)")
    parser.add_argument("--prune", type=float, default=0.5, help="share of weights pruned")
    parser.add_argument("--finetune-steps", type=int, default=300)
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="least seconds of batch-1 timing per variant"
    )
    add_output_options(parser)
    args = parser.parse_args()
    timing = Timing(seconds=args.seconds, throughput_seconds=min(3.0, args.seconds))
    with tempfile.TemporaryDirectory(prefix="medsight-optimize-bench-") as tmp:
        run = args.run
        if run is None:
            run = Path(tmp) / f"{args.dataset}-run"
            train_and_evaluate(TrainConfig(dataset=args.dataset, epochs=args.epochs), run)
        record = produce(run, args.prune, args.finetune_steps, timing)
    command = " ".join(
        ["MEDSIGHT_DATA=../shared/data .venv/bin/python benchmarks/optimize.py", *sys.argv[1:]]
    )
    text = section(record, command, args.dataset if args.run is None else str(args.run))
    publish(args, text, MARKER, record)


if __name__ == "__main__":
    main()
