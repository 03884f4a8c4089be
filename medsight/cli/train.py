"""``medsight train``, ``evaluate`` and ``quickstart``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medsight.cli import app, say


@app.command()
def train(
    ctx: typer.Context,
    dataset: Annotated[str | None, typer.Option(help="data set name (`medsight data list`)")] = None,
    task: Annotated[
        str | None, typer.Option(help="what to learn: classification (default) or segmentation")
    ] = None,
    out: Annotated[Path, typer.Option(help="run folder to create")] = Path("runs/latest"),
    model: Annotated[
        str | None,
        typer.Option(
            help="architecture (default: from the data): images compact-resnet, resnet10, resnet18, "
            "densenet121; masks unet, basic-unet; signals cnn1d, lstm, gru, cnn-gru; image+table fusion"
        ),
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="epochs (default: from data and time budget)")] = None,
    time_budget: Annotated[float | None, typer.Option(help="minutes of training at most")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    batch_size: Annotated[int | None, typer.Option(help="batch size")] = None,
    lr: Annotated[float | None, typer.Option(help="peak learning rate")] = None,
    image_size: Annotated[int | None, typer.Option(help="network input side in pixels")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML file of config keys; flags override it")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the interrupted run in --out")] = False,
    skip_eval: Annotated[bool, typer.Option("--skip-eval", help="train only; evaluate later")] = False,
    nproc: Annotated[
        int, typer.Option(help="processes on this machine (PyTorch DDP); clusters: torchrun, see README")
    ] = 1,
    dp_epsilon: Annotated[
        float | None, typer.Option(help="train with differential privacy (Opacus) to this ε > 0")
    ] = None,
    dp_delta: Annotated[
        float | None, typer.Option(help="DP δ (default: a power of ten below 1/(10 n))")
    ] = None,
    dp_max_grad_norm: Annotated[
        float | None, typer.Option(help="DP per-sample clipping norm (default 1)")
    ] = None,
) -> None:
    """Train a model (a classifier, or a segmenter with --task segmentation) into a run folder,
    then evaluate it (unless --skip-eval).

    Every setting left open is derived from the data (size, class balance, modality) and the time budget.
    """
    from medsight.train import distributed
    from medsight.train.config import TrainConfig, load_config
    from medsight.train.engine import fit

    if resume:
        cfg = TrainConfig(dataset="(from the run folder)")
    else:
        cfg = load_config(
            config,
            {
                "dataset": dataset,
                "task": task,
                "model": model,
                "epochs": epochs,
                "time_budget_min": time_budget,
                "seed": seed,
                "batch_size": batch_size,
                "lr": lr,
                "image_size": image_size,
                "device": device,
                "dp_epsilon": dp_epsilon,
                "dp_delta": dp_delta,
                "dp_max_grad_norm": dp_max_grad_norm,
            },
        )
    if nproc != 1 and not distributed.under_torchrun():
        distributed.preflight(cfg, out, nproc, resume)
        code = distributed.launch(nproc, _worker_args(ctx))
        if code:
            raise typer.Exit(code)
        return
    fit(cfg, out, resume=resume, log=say)
    if not skip_eval and distributed.is_main_process():
        from medsight.workflows import evaluate_and_explain

        evaluate_and_explain(out, log=say)


def _worker_args(ctx: typer.Context) -> list[str]:
    """This command's options as given, for the workers torchrun starts (``python -m medsight.train``)."""
    args: list[str] = []
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if param.name == "nproc" or value is None or value is False:
            continue
        args += [param.opts[0]] if value is True else [param.opts[0], str(value)]
    return args


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="a run folder made by `medsight train`")],
    split: Annotated[str, typer.Option(help="split to report on: test, val or train")] = "test",
) -> None:
    """Evaluate a trained run: metrics with 95% CIs, threshold from validation, plots, explanations, report."""
    from medsight.workflows import evaluate_and_explain

    evaluate_and_explain(run, split, log=say)


@app.command()
def quickstart(
    out: Annotated[Path, typer.Option(help="run folder to create")] = Path("runs/quickstart"),
    time_budget: Annotated[float, typer.Option(help="minutes of training")] = 3.0,
) -> None:
    """Train and evaluate a classifier on PneumoniaMNIST (or, offline without it, built-in phantoms)."""
    from medsight.workflows import quickstart as run_quickstart

    run_quickstart(out, time_budget_min=time_budget, log=say)
