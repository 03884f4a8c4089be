"""Evaluation of a model with several labels (multi-task heads): each label on its own.

Each head gets what a one-label run gets: its own operating threshold chosen on validation only
(binary heads), metrics with bootstrap confidence intervals on validation and the evaluated
split. They are kept under ``metrics["heads"][label]``; the first head also fills the usual
top-level blocks, so the report, plots and summary line read it like any run.
"""

from __future__ import annotations

import numpy as np

from medsight.evaluate.metrics import choose_threshold, evaluate_split


def head_columns(heads: dict[str, list[str]]) -> dict[str, slice]:
    """Each head's columns in the model's side-by-side output."""
    columns, start = {}, 0
    for name, classes in heads.items():
        columns[name] = slice(start, start + len(classes))
        start += len(classes)
    return columns


def evaluate_heads(
    heads: dict[str, list[str]],
    labels: dict[str, np.ndarray],
    probs: dict[str, np.ndarray],
    rule: str,
    n_boot: int,
    seed: int,
) -> tuple[dict, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-head metrics, and the first head's labels and probabilities (for the usual blocks).

    ``labels`` are (N, T) and ``probs`` (N, sum of the heads' classes), by split name.
    """
    block: dict = {}
    for k, (name, columns) in enumerate(head_columns(heads).items()):
        classes = heads[name]
        head_probs = {split: p[:, columns] for split, p in probs.items()}
        threshold = (
            choose_threshold(labels["val"][:, k], head_probs["val"][:, 1], rule)
            if len(classes) == 2
            else None
        )
        block[name] = {"classes": classes, "threshold": threshold}
        for split in labels:
            block[name][split] = evaluate_split(
                labels[split][:, k], head_probs[split], classes, threshold, n_boot=n_boot, seed=seed
            )
    first = head_columns(heads)[next(iter(heads))]
    return block, {s: v[:, 0] for s, v in labels.items()}, {s: p[:, first] for s, p in probs.items()}


def heads_summary(block: dict, split: str) -> str:
    """One line: each label's AUC on ``split`` with its 95% CI."""
    parts = []
    for name, facts in block.items():
        m = facts[split]
        ci = (m.get("ci") or {}).get("auc") or [None, None]
        auc = "n/a" if m.get("auc") is None else f"{m['auc']:.3f}"
        parts.append(f"{name} AUC {auc}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci[0] is not None else ""))
    return f"{split} per label: " + "; ".join(parts)
