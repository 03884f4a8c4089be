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


ROUND_VARIANTS = ("eager", "onnx-fp32", "int8", "int8-dynamic")  # those the run has are timed in rounds


def produce(run: Path, prune: float, finetune_steps: int, timing: Timing) -> dict:
    for fmt in ("torchscript", "onnx"):
        export_run(run, fmt)
    optimize_run(run, quantize_to="int8", prune=prune, finetune_steps=finetune_steps)
    return bench_run(run, timing=timing)


def interleaved_throughput(
    run: Path, names: list[str], rounds: int, seconds: float
) -> dict[str, list[float]]:
    """Batch-64 throughput of ``names`` timed in turn, ``rounds`` times over: a machine whose speed drifts
    (a neighbour, a clock change) then moves every variant of a round alike, and the spread shows."""
    import numpy as np

    from medsight.optimize.bench import THROUGHPUT_BATCH, time_throughput
    from medsight.optimize.common import open_run, use_all_cores
    from medsight.optimize.predictors import load_predictor

    use_all_cores()
    test = open_run(run).inputs("test", purpose="time the variants").numpy()
    batch = np.concatenate([test] * int(np.ceil(THROUGHPUT_BATCH / len(test))))[:THROUGHPUT_BATCH]
    predictors = {name: load_predictor(run, name) for name in names}
    timing = Timing(throughput_seconds=seconds)
    found: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for name, predictor in predictors.items():
            found[name].append(time_throughput(predictor, batch, timing))
    return found


def multiply_adds(run: Path) -> int:
    """The model's multiply-adds for one image (convolutions and linear layers), counted in a forward pass."""
    import torch

    from medsight.train.inference import load_trained_model

    trained = load_trained_model(run)
    counted = 0

    def count(layer: torch.nn.Module, _inputs: tuple, out: torch.Tensor) -> None:
        nonlocal counted
        if isinstance(layer, torch.nn.Conv1d | torch.nn.Conv2d | torch.nn.Conv3d):
            kernel = int(torch.tensor(layer.kernel_size).prod())
            counted += out[0].numel() * layer.in_channels // layer.groups * kernel
        elif isinstance(layer, torch.nn.Linear):
            counted += layer.in_features * layer.out_features

    hooks = [layer.register_forward_hook(count) for layer in trained.model.modules()]
    spec = trained.spec
    with torch.inference_mode():
        trained.model.eval()(torch.zeros(1, spec.channels, *[spec.image_size] * spec.spatial_dims))
    for hook in hooks:
        hook.remove()
    return counted


def matmul_gflops(threads: int, size: int = 2048, repeats: int = 20) -> float:
    """This machine's fp32 rate on a large matrix product (torch, ``threads`` threads): the ceiling a
    runtime doing the model's arithmetic in fp32 can hope for."""
    import time

    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def ceiling_note(record: dict) -> list[str]:
    """How close eager and ORT fp32 run to the machine's fp32 rate, and what the 1.7× target would need."""
    flops = 2 * record["multiply_adds"]
    peak = record["matmul_gflops"]
    rounds = record["rounds"]
    rate = {
        name: sorted(rounds[name])[len(rounds[name]) // 2] * flops / 1e9 for name in ("eager", "onnx-fp32")
    }
    needed = TARGETS["ort_vs_eager_throughput"] * rate["eager"]
    return [
        f"Compute ceiling: the model does {record['multiply_adds'] / 1e6:.1f} M multiply-adds per image. On the "
        f"same threads this machine multiplies large fp32 matrices at {peak:.0f} GFLOP/s; at batch 64 (median of "
        "the rounds) eager runs "
        f"the model at {rate['eager']:.0f} GFLOP/s ({rate['eager'] / peak:.0%} of that) and ORT fp32 at "
        f"{rate['onnx-fp32']:.0f} ({rate['onnx-fp32'] / peak:.0%}). "
        f"{TARGETS['ort_vs_eager_throughput']}× eager would take {needed:.0f} GFLOP/s "
        f"({needed / peak:.0%} of the matrix-product rate).",
    ]


def _ratio(record: dict, top: str, bottom: str) -> tuple[float, str]:
    """Median over the interleaved rounds of ``top``'s throughput over ``bottom``'s, and its range."""
    rounds = record["rounds"]
    ratios = sorted(a / b for a, b in zip(rounds[top], rounds[bottom], strict=True))
    median = ratios[len(ratios) // 2]
    return median, f"{median:.2f}× ({ratios[0]:.2f}–{ratios[-1]:.2f})"


def target_rows(record: dict) -> list[tuple[str, str, str, bool]]:
    rows = {r["variant"]: r for r in record["rows"]}
    fp32, int8 = rows["onnx-fp32"], rows.get("int8") or rows["int8-dynamic"]
    ort_gain, ort_text = _ratio(record, "onnx-fp32", "eager")
    int8_gain, int8_text = _ratio(record, int8["variant"], "onnx-fp32")
    size = int8["size_mb"] / fp32["size_mb"]
    drop = rows["eager"]["test_auc"] - int8["test_auc"]
    return [
        (
            "ORT fp32 vs eager throughput",
            ort_text,
            f"≥ {TARGETS['ort_vs_eager_throughput']}×",
            ort_gain >= TARGETS["ort_vs_eager_throughput"],
        ),
        (
            "int8 vs ORT fp32 throughput",
            int8_text,
            f"≥ {TARGETS['int8_vs_ort_throughput']}×",
            int8_gain >= TARGETS["int8_vs_ort_throughput"],
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
    lines += [
        "",
        f"Throughput ratios: median over {len(next(iter(record['rounds'].values())))} interleaved rounds of "
        "batch-64 timing (range in brackets); the table's throughput column is `medsight bench`'s single pass.",
        "",
        "| target (issue 5) | measured | target | met |",
        "|---|---|---|---|",
    ]
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
        *ceiling_note(record),
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
    parser.add_argument("--rounds", type=int, default=5, help="interleaved throughput rounds for the ratios")
    add_output_options(parser)
    args = parser.parse_args()
    timing = Timing(seconds=args.seconds, throughput_seconds=min(3.0, args.seconds))
    with tempfile.TemporaryDirectory(prefix="medsight-optimize-bench-") as tmp:
        run = args.run
        if run is None:
            run = Path(tmp) / f"{args.dataset}-run"
            train_and_evaluate(TrainConfig(dataset=args.dataset, epochs=args.epochs), run)
        record = produce(run, args.prune, args.finetune_steps, timing)
        made = [name for name in ROUND_VARIANTS if name in {r["variant"] for r in record["rows"]}]
        record["rounds"] = interleaved_throughput(run, made, args.rounds, min(3.0, args.seconds))
        record["multiply_adds"] = multiply_adds(run)
        record["matmul_gflops"] = matmul_gflops(record["threads"]["torch"])
    command = " ".join(
        ["MEDSIGHT_DATA=../shared/data .venv/bin/python benchmarks/optimize.py", *sys.argv[1:]]
    )
    text = section(record, command, args.dataset if args.run is None else str(args.run))
    publish(args, text, MARKER, record)


if __name__ == "__main__":
    main()
