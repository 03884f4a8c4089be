"""``medsight explain``: Grad-CAM or occlusion maps and faithfulness scores for an evaluated run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medsight.cli import app, say


@app.command()
def explain(
    run: Annotated[Path, typer.Argument(help="an evaluated run folder (`medsight train`)")],
    split: Annotated[str, typer.Option(help="split to explain: test, val or train")] = "test",
    method: Annotated[str, typer.Option(help="gradcam or occlusion")] = "gradcam",
    n: Annotated[int, typer.Option("--n", help="cases scored for faithfulness")] = 32,
) -> None:
    """Draw maps over the run's cases and score their faithfulness into metrics.json and report.html."""
    from medsight.explain.run import explain_run

    explain_run(run, split, method, n, log=say)
