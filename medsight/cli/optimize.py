"""``medsight export``, ``optimize``, ``bench`` and ``ensemble``: ship a trained run, smaller and faster."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from medsight.cli import app, console, say

RunArg = Annotated[Path, typer.Argument(help="a run folder made by `medsight train`")]


@app.command()
def export(
    run: RunArg,
    format: Annotated[str, typer.Option("--format", "-f", help="onnx or torchscript")] = "onnx",
) -> None:
    """Export the run's model (ONNX opset 18 with a free batch size, or TorchScript), checked against eager.

    The file takes the standardised input tensor (see exports/input_spec.json) and returns logits.
    A check on the validation split (max |Δ probability| ≤ 1e-4, same AUC to 3 decimals) must pass,
    or nothing is written; its figures go to <file>.check.json.
    """
    from medsight.optimize.export import export_run

    export_run(run, format.lower(), log=say)


@app.command()
def optimize(
    run: RunArg,
    quantize: Annotated[
        str | None, typer.Option(help="int8: static (CNNs) or dynamic (Linear-heavy)")
    ] = None,
    prune: Annotated[float | None, typer.Option(help="share of weights to prune, in (0, 1)")] = None,
    prune_method: Annotated[
        str, typer.Option(help="unstructured (global L1 magnitude) or structured (conv channels, L2)")
    ] = "unstructured",
    low_rank: Annotated[
        int | None, typer.Option(help="rank R for SVD factorisation of large Linear layers")
    ] = None,
    finetune_steps: Annotated[int, typer.Option(help="fine-tune steps after pruning")] = 300,
) -> None:
    """Make compressed variants under RUN/variants/ and show each one's cost in test AUC and accuracy."""
    from medsight.optimize.variants import optimize_run

    optimize_run(
        run,
        quantize_to=quantize,
        prune=prune,
        prune_method=prune_method,
        low_rank=low_rank,
        finetune_steps=finetune_steps,
        log=say,
    )


def bench_table(record: dict) -> Table:
    table = Table(title=f"medsight bench: {record['run']}")
    for column in ("variant", "size MB", "p50 ms (b=1)", "p99 ms (b=1)", "images/s (b=64)", "test AUC"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    chosen = record["serving"]["variant"]
    for row in record["rows"]:
        auc = "n/a" if row["test_auc"] is None else f"{row['test_auc']:.4f}"
        name = f"{row['variant']} *" if row["variant"] == chosen else row["variant"]
        table.add_row(
            name,
            f"{row['size_mb']:.3f}",
            f"{row['p50_ms']:.3f}",
            f"{row['p99_ms']:.3f}",
            f"{row['throughput']:.0f}",
            auc,
        )
    return table


@app.command()
def bench(
    run: RunArg,
    seconds: Annotated[float, typer.Option(help="least seconds of batch-1 timing per variant")] = 5.0,
    runs: Annotated[int, typer.Option(help="least timed runs at batch 1 per variant")] = 200,
    no_make: Annotated[
        bool, typer.Option("--no-make", help="bench only what exists; do not export or quantize first")
    ] = False,
) -> None:
    """Size, latency (batch 1), throughput (batch 64) and test AUC of every variant; writes bench.json and
    serving.json (the fastest variant within 0.005 test AUC of the original)."""
    from medsight.optimize.bench import Timing, bench_run

    timing = Timing(runs=runs, seconds=seconds, throughput_seconds=min(3.0, max(0.2, seconds)))
    record = bench_run(run, timing=timing, make_missing=not no_make, log=say)
    console.print(bench_table(record))
    threads = record["threads"]
    say(
        f"threads: torch {threads['torch']}, ONNX Runtime intra-op {threads['onnxruntime_intra_op']} "
        f"(same for every variant); * = serving"
    )
    say(
        f"serving: {record['serving']['variant']} ({record['serving']['path']}): {record['serving']['reason']}"
    )
    say(f"written: {Path(run) / 'bench.json'}, {Path(run) / 'serving.json'}")


@app.command()
def ensemble(
    runs: Annotated[list[Path], typer.Argument(help="two or more run folders of one data set")],
    out: Annotated[Path, typer.Option(help="run folder to create for the ensemble")],
    weights: Annotated[str | None, typer.Option(help="one weight per run, e.g. 2,1")] = None,
    tta: Annotated[bool, typer.Option("--tta", help="average flips too (where anatomy allows)")] = False,
    bootstrap: Annotated[int, typer.Option(help="bootstrap resamples for the CIs")] = 1000,
) -> None:
    """Average the runs' probabilities into a new run folder, evaluated like any run."""
    from medsight.optimize.ensemble import make_ensemble

    make_ensemble(runs, out, weights=weights, tta=tta, n_boot=bootstrap, log=say)
