"""``medsight bench``: every variant of a run side by side, and the one serving should use.

For each variant: size on disk, p50/p99 latency at batch 1 (after a warm-up), throughput at
batch 64, and test AUC. torch and ONNX Runtime get the same number of threads (all cores).
Serving uses the fastest variant at batch 1 whose test AUC is within ``AUC_TOLERANCE`` of the
original's; the choice and the reason go to ``RUN/serving.json``.
"""

from __future__ import annotations

import io
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from medsight.optimize.common import (
    VARIANTS,
    Log,
    OptimizeRun,
    open_run,
    require_image_only,
    use_all_cores,
    write_json,
)
from medsight.optimize.export import export_model
from medsight.optimize.predictors import FIXED_VARIANTS, Predictor, load_predictor, predict
from medsight.optimize.variants import list_variants, quantize_variant
from medsight.train.tasks.classification import validation_score

AUC_TOLERANCE = 0.005
THROUGHPUT_BATCH = 64


@dataclass
class BenchRow:
    variant: str
    path: str  # inside the run folder
    size_mb: float
    p50_ms: float
    p99_ms: float
    latency_runs: int
    throughput: float  # images/s at batch 64
    test_auc: float | None


@dataclass
class Timing:
    """How long to time: at least ``runs`` runs and ``seconds`` s at batch 1, capped at ``max_seconds``."""

    runs: int = 200
    seconds: float = 5.0
    max_seconds: float = 20.0
    throughput_seconds: float = 3.0
    warmup: int = 10


def time_latency(predictor: Predictor, sample: np.ndarray, timing: Timing) -> tuple[float, float, int]:
    for _ in range(timing.warmup):
        predictor.logits(sample)
    times: list[float] = []
    started = time.perf_counter()
    while True:
        elapsed = time.perf_counter() - started
        enough = len(times) >= timing.runs and elapsed >= timing.seconds
        if enough or (elapsed >= timing.max_seconds and len(times) >= 20):
            break
        tick = time.perf_counter()
        predictor.logits(sample)
        times.append(time.perf_counter() - tick)
    ms = np.asarray(times) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), len(times)


def time_throughput(predictor: Predictor, batch: np.ndarray, timing: Timing) -> float:
    predictor.logits(batch)  # warm-up: allocations, kernel choice
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - started < timing.throughput_seconds:
        tick = time.perf_counter()
        predictor.logits(batch)
        times.append(time.perf_counter() - tick)
    return len(batch) / float(np.median(times))  # median: one stall from a neighbour does not count


def eager_size_mb(run: OptimizeRun) -> float:
    """The eager model's weights as a state dict (checkpoint.pt also holds optimizer state)."""
    buffer = io.BytesIO()
    torch.save(run.trained.model.state_dict(), buffer)
    return buffer.tell() / 1e6


def ensure_variants(run: OptimizeRun, log: Log) -> None:
    """Make the variants that need no training: TorchScript, ONNX fp32 (both checked) and int8."""
    for fmt, name in (("torchscript", "torchscript"), ("onnx", "onnx-fp32")):
        if not (run.run_dir / FIXED_VARIANTS[name]).exists():
            export_model(run, fmt, log)
    if not any(name.startswith("int8") for name in list_variants(run.run_dir)):
        quantize_variant(run, log)


def variant_names(run_dir: Path) -> list[str]:
    names = [n for n in FIXED_VARIANTS if (run_dir / FIXED_VARIANTS[n]).exists()]
    return names + list(list_variants(run_dir))


def _path_of(run_dir: Path, name: str) -> Path:
    if name in FIXED_VARIANTS:
        return run_dir / FIXED_VARIANTS[name]
    record = json.loads((run_dir / VARIANTS / name / "variant.json").read_text())
    return run_dir / VARIANTS / name / record["file"]


def bench_variant(run: OptimizeRun, name: str, timing: Timing) -> BenchRow:
    predictor = load_predictor(run.run_dir, name)
    test = run.inputs("test", purpose="measure test AUC").numpy()
    repeats = int(np.ceil(THROUGHPUT_BATCH / len(test)))
    batch = np.concatenate([test] * repeats)[:THROUGHPUT_BATCH]
    p50, p99, runs = time_latency(predictor, test[:1], timing)
    auc = validation_score(run.labels("test"), predict(predictor, test))
    path = _path_of(run.run_dir, name)
    return BenchRow(
        variant=name,
        path=str(path.relative_to(run.run_dir)),
        size_mb=eager_size_mb(run) if name == "eager" else path.stat().st_size / 1e6,
        p50_ms=p50,
        p99_ms=p99,
        latency_runs=runs,
        throughput=time_throughput(predictor, batch, timing),
        test_auc=None if np.isnan(auc) else float(auc),
    )


def variant_threshold(run: OptimizeRun, name: str) -> float | None:
    """Exact exports keep the run's threshold; a compressed variant uses its own validation threshold."""
    metrics_file = run.run_dir / VARIANTS / name / "metrics.json"
    if name in FIXED_VARIANTS or not metrics_file.exists():
        return run.trained.threshold
    own = json.loads(metrics_file.read_text()).get("own_threshold")
    return own["threshold"] if own else run.trained.threshold


def choose_serving(run: OptimizeRun, rows: list[BenchRow]) -> dict:
    original = next(r for r in rows if r.variant == "eager")
    if original.test_auc is None:
        fair = rows
        why = "test AUC is undefined (one class in the test split), so the fastest variant"
    else:
        fair = [r for r in rows if r.test_auc is not None and r.test_auc >= original.test_auc - AUC_TOLERANCE]
        why = f"fastest at batch 1 among variants whose test AUC is within {AUC_TOLERANCE} of the original"
    best = min(fair, key=lambda r: r.p50_ms)
    faster_but_worse = [r.variant for r in rows if r.p50_ms < best.p50_ms and r not in fair]
    reason = (
        f"{why} ({original.test_auc if original.test_auc is None else round(original.test_auc, 4)}): "
        f"p50 {best.p50_ms:.3f} ms vs eager {original.p50_ms:.3f} ms, test AUC "
        f"{'n/a' if best.test_auc is None else f'{best.test_auc:.4f}'}"
    )
    if faster_but_worse:
        reason += f"; faster but less accurate: {', '.join(faster_but_worse)}"
    return {
        "variant": best.variant,
        "path": best.path,
        "threshold": variant_threshold(run, best.variant),
        "reason": reason,
    }


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def int8_instructions() -> str:
    """What the CPU offers int8 kernels: VNNI multiplies int8 in one instruction, AVX2 alone needs three."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown"
    found = [f for f in ("avx512_vnni", "avx_vnni", "avx512f", "avx2") if f in flags]
    return (
        ", ".join(found) + ("" if {"avx512_vnni", "avx_vnni"} & flags else ", no VNNI") if found else "none"
    )


def machine() -> dict:
    return {
        "cpu": cpu_name(),
        "int8_instructions": int8_instructions(),
        "cores": os.cpu_count(),
        "torch": str(torch.__version__),
        "onnxruntime": onnxruntime.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }


def bench_run(
    run_dir: Path, *, timing: Timing | None = None, make_missing: bool = True, log: Log = print
) -> dict:
    """Benchmark every variant of the run; writes ``bench.json`` and ``serving.json``; returns the record."""
    timing = timing or Timing()
    run = open_run(run_dir)
    require_image_only(run, "benchmarking variants")
    run.inputs("test", purpose="benchmark the variants on the test split")
    threads = use_all_cores()
    if make_missing:
        ensure_variants(run, log)
    log(
        f"threads: torch {torch.get_num_threads()}, ONNX Runtime intra-op {threads} (inter-op 1), same for all; "
        f"latency at batch 1 after {timing.warmup} warm-up runs, throughput at batch {THROUGHPUT_BATCH}"
    )
    rows = []
    for name in variant_names(run.run_dir):
        rows.append(bench_variant(run, name, timing))
        log(f"  {name}: p50 {rows[-1].p50_ms:.3f} ms, {rows[-1].throughput:.0f} images/s")
    serving = choose_serving(run, rows)
    record = {
        "run": str(run.run_dir),
        "threads": {
            "torch": torch.get_num_threads(),
            "onnxruntime_intra_op": threads,
            "onnxruntime_inter_op": 1,
        },
        "machine": machine(),
        "latency_batch": 1,
        "throughput_batch": THROUGHPUT_BATCH,
        "timing": asdict(timing),
        "rows": [asdict(r) for r in rows],
        "serving": serving,
    }
    write_json(run.run_dir / "bench.json", record)
    write_json(run.run_dir / "serving.json", serving)
    return record
