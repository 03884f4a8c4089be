"""Jobs that span packages: train then evaluate, and the offline-safe quickstart.

The CLI and (later) the HTTP API both call these; they hold no logic of their own beyond
putting the packages' steps in order.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from medsight.data.pull import pull
from medsight.data.registry import SYNTHETIC, load_dataset
from medsight.errors import DataNotFoundError, DownloadError, MedsightError
from medsight.evaluate.run import evaluate_run
from medsight.explain.run import explain_run
from medsight.train.config import TrainConfig
from medsight.train.engine import fit

Log = Callable[[str], None]
QUICKSTART_DATASET = "pneumoniamnist"
EXPLAIN_SECONDS = 10.0  # faithfulness scoring after training: about 1 s for 32 small 2D images


def train_and_evaluate(
    config: TrainConfig, run_dir: Path, *, resume: bool = False, explain: bool = True, log: Log = print
) -> dict:
    """Train into ``run_dir``, evaluate (threshold on validation, one look at test), then explain.

    ``explain=False`` skips the Grad-CAM figure and faithfulness scores (a few seconds on small images).
    """
    fit(config, run_dir, resume=resume, log=log)
    return evaluate_and_explain(run_dir, explain=explain, log=log)


def evaluate_and_explain(
    run_dir: Path, split: str = "test", *, explain: bool = True, log: Log = print
) -> dict:
    """Evaluate a trained run, then add its explanations and faithfulness scores to the report."""
    metrics = evaluate_run(run_dir, split, log=log)
    explained = explain_step(run_dir, log=log) if explain else None
    return explained or metrics


def explain_step(run_dir: Path, *, log: Log = print) -> dict | None:
    """Explanations for a freshly evaluated run; the run is complete either way, so a refusal is logged.

    Returns the run's metrics with faithfulness, or None when the model cannot be explained.
    """
    try:
        # a budget, so a large 3D model scores fewer cases rather than slowing every training run
        return explain_run(run_dir, time_budget_s=EXPLAIN_SECONDS, log=log)
    except MedsightError as err:  # e.g. a model without a layer Grad-CAM can use
        log(f"explanations skipped: {err}")
        return None


def pick_quickstart_dataset(log: Log = print, pull_timeout: float = 10.0) -> str:
    """PneumoniaMNIST if it is here or can be pulled; otherwise the built-in synthetic set."""
    try:
        load_dataset(QUICKSTART_DATASET)
        return QUICKSTART_DATASET
    except DataNotFoundError:
        pass
    try:
        pull(QUICKSTART_DATASET, timeout=pull_timeout, quiet=True)
        return QUICKSTART_DATASET
    except DownloadError as err:
        log(f"could not download {QUICKSTART_DATASET} ({err}); using the built-in synthetic lesion phantoms.")
        return SYNTHETIC


def quickstart(run_dir: Path, *, time_budget_min: float = 3.0, log: Log = print) -> dict:
    dataset = pick_quickstart_dataset(log)
    log(f"quickstart data set: {dataset}")
    config = TrainConfig(dataset=dataset, time_budget_min=time_budget_min, bootstrap=500)
    return train_and_evaluate(config, run_dir, log=log)
