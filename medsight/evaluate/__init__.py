"""Judge a trained model honestly: metrics with confidence intervals, a threshold chosen on
validation only, calibration, plots and a self-contained HTML report."""

from medsight.evaluate.metrics import (
    THRESHOLD_RULES,
    binary_metrics,
    bootstrap_ci,
    calibration,
    choose_threshold,
    evaluate_split,
    multiclass_metrics,
    rank_auc,
)
from medsight.evaluate.plots import (
    plot_confusion,
    plot_examples,
    plot_pr,
    plot_reliability,
    plot_roc,
    plot_training_curves,
)
from medsight.evaluate.report import write_report

__all__ = [
    "THRESHOLD_RULES",
    "binary_metrics",
    "bootstrap_ci",
    "calibration",
    "choose_threshold",
    "evaluate_split",
    "multiclass_metrics",
    "plot_confusion",
    "plot_examples",
    "plot_pr",
    "plot_reliability",
    "plot_roc",
    "plot_training_curves",
    "rank_auc",
    "write_report",
]
