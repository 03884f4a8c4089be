"""Tests of medsight.evaluate: metrics against hand-computed cases, threshold choice, bootstrap CIs,
calibration, plots and the self-contained HTML report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medsight.errors import BadInputError, ConfigError
from medsight.evaluate import (
    binary_metrics,
    bootstrap_ci,
    calibration,
    choose_threshold,
    evaluate_split,
    multiclass_metrics,
    plot_confusion,
    plot_examples,
    plot_pr,
    plot_reliability,
    plot_roc,
    plot_training_curves,
    rank_auc,
    write_report,
)
from medsight.train.config import load_config

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Hand-computed binary case: 4 negatives, 4 positives.
# At threshold 0.65: predicted positive = {0.8 (neg), 0.7, 0.9 (pos)} → TP 2, FP 1, FN 2, TN 3.
# AUC: positive-over-negative pairs 1 + 3 + 3 + 4 = 11 of 16.
HAND_LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1])
HAND_SCORES = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.6, 0.7, 0.9])


def _binary_probs(scores: np.ndarray) -> np.ndarray:
    return np.stack([1 - scores, scores], axis=1)


def _synthetic_binary(n: int, seed: int, separation: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Labels and (N, 2) probs from a logistic model with a given class separation."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    logits = rng.normal(size=n) + separation * (labels - 0.5)
    return labels, _binary_probs(1 / (1 + np.exp(-logits)))


def _synthetic_multiclass(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), labels] += 1.5
    probs = np.exp(logits)
    return labels, probs / probs.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------- binary metrics


def test_binary_metrics_match_hand_computed_case() -> None:
    m = binary_metrics(HAND_LABELS, HAND_SCORES, threshold=0.65)
    assert m["auc"] == pytest.approx(11 / 16)
    assert m["sensitivity"] == pytest.approx(0.5)
    assert m["specificity"] == pytest.approx(0.75)
    assert m["ppv"] == pytest.approx(2 / 3)
    assert m["npv"] == pytest.approx(3 / 5)
    assert m["acc"] == pytest.approx(5 / 8)
    assert m["f1"] == pytest.approx(4 / 7)
    assert m["balanced_accuracy"] == pytest.approx(0.625)
    assert m["acc_at_0_5"] == pytest.approx(6 / 8)  # at 0.5: TP 3, FP 1, FN 1, TN 3
    assert m["threshold"] == 0.65
    assert m["n"] == 8
    assert m["prevalence"] == pytest.approx(0.5)


def test_binary_metrics_predicts_positive_at_equal_score() -> None:
    m = binary_metrics(np.array([0, 1]), np.array([0.3, 0.6]), threshold=0.6)
    assert m["sensitivity"] == 1.0 and m["specificity"] == 1.0


def test_binary_metrics_undefined_values_are_none_not_nan() -> None:
    no_positive_calls = binary_metrics(HAND_LABELS, HAND_SCORES, threshold=0.95)
    assert no_positive_calls["ppv"] is None
    assert no_positive_calls["f1"] == 0.0  # defined: there are positives to miss
    one_class = binary_metrics(np.zeros(4, dtype=int), np.array([0.1, 0.2, 0.7, 0.9]), threshold=0.5)
    assert one_class["auc"] is None
    assert one_class["sensitivity"] is None
    assert one_class["balanced_accuracy"] is None
    json.dumps(one_class, allow_nan=False)


def test_binary_metrics_refuses_mismatched_or_non_binary_input() -> None:
    with pytest.raises(BadInputError):
        binary_metrics(HAND_LABELS, HAND_SCORES[:-1], threshold=0.5)
    with pytest.raises(BadInputError):
        binary_metrics(np.array([0, 2]), np.array([0.1, 0.9]), threshold=0.5)


def test_rank_auc_equals_sklearn_with_ties() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) + 0.3 * labels, 1)  # rounding makes many ties
    assert rank_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    assert rank_auc(np.ones(5, dtype=int), rng.random(5)) is None


# --------------------------------------------------------------------------- threshold choice


def _imbalanced_case() -> tuple[np.ndarray, np.ndarray]:
    """90 negatives (80 at 0.1, 10 at 0.45) and 10 positives (5 at 0.4, 5 at 0.9).

    Youden J: threshold in (0.1, 0.4] → sens 1, spec 80/90, J 0.889 (best);
    (0.45, 0.9] → sens 0.5, spec 1, J 0.5 — but accuracy 0.95 there beats 0.90.
    """
    labels = np.array([0] * 90 + [1] * 10)
    scores = np.array([0.1] * 80 + [0.45] * 10 + [0.4] * 5 + [0.9] * 5)
    return labels, scores


def test_choose_threshold_picks_youden_point() -> None:
    labels, scores = _imbalanced_case()
    threshold = choose_threshold(labels, scores, rule="youden")
    assert 0.1 < threshold <= 0.4
    assert threshold == pytest.approx(0.25)  # midpoint of the gap between 0.1 and 0.4
    m = binary_metrics(labels, scores, threshold)
    assert m["sensitivity"] == 1.0
    assert m["specificity"] == pytest.approx(80 / 90)


def test_choose_threshold_accuracy_rule_differs_and_prefers_0_5_on_ties() -> None:
    labels, scores = _imbalanced_case()
    # every threshold in (0.45, 0.9] gives accuracy 0.95; 0.5 is among them, so it wins the tie
    assert choose_threshold(labels, scores, rule="accuracy") == 0.5


def test_choose_threshold_tie_between_gaps_goes_to_nearest_0_5() -> None:
    # F1 is best (0.8) at thresholds in (0.1, 0.2]... and ties elsewhere; exact ties go to the one nearest 0.5
    labels = np.array([0, 1, 0, 1])
    scores = np.array([0.1, 0.2, 0.7, 0.8])
    assert choose_threshold(labels, scores, rule="f1") == pytest.approx(0.15)


def test_youden_prefers_0_5_when_an_extreme_threshold_wins_by_less_than_one_case() -> None:
    # 100 negatives, 300 positives, nearly separable: J is maximal at a low threshold that gains only one
    # negative-side case over 0.5; that gain is below what a validation split of this size can resolve
    rng = np.random.default_rng(0)
    negatives = rng.uniform(0.0, 0.1, 100)
    positives = np.concatenate([rng.uniform(0.6, 1.0, 299), [0.15]])
    labels = np.array([0] * 100 + [1] * 300)
    scores = np.concatenate([negatives, positives])
    threshold = choose_threshold(labels, scores)
    assert 0.15 < threshold <= 0.6  # the plateau's point nearest 0.5, not the extreme 0.1-0.15 gap
    j_chosen = binary_metrics(labels, scores, threshold)["balanced_accuracy"]
    j_best = binary_metrics(labels, scores, 0.125)["balanced_accuracy"]
    assert j_best - j_chosen <= 1 / 100


@pytest.mark.parametrize("rule,key", [("youden", "balanced_accuracy"), ("accuracy", "acc"), ("f1", "f1")])
def test_choose_threshold_is_optimal_over_all_operating_points(rule: str, key: str) -> None:
    labels, probs = _synthetic_binary(200, seed=1, separation=1.0)
    scores = probs[:, 1]
    threshold = choose_threshold(labels, scores, rule=rule)
    assert 0 < threshold < 1
    best = binary_metrics(labels, scores, threshold)[key]
    # Youden's J may give up less than one case of the rarer class to stay nearer 0.5
    slack = 0.5 / min(np.sum(labels == 1), np.sum(labels == 0)) if rule == "youden" else 1e-12
    for other in np.append(np.unique(scores), 1.0):
        assert best >= binary_metrics(labels, scores, float(other))[key] - slack


@pytest.mark.parametrize("target", [0.5, 0.9, 0.97, 1.0 - 1e-9])
def test_sensitivity_rule_is_the_most_specific_threshold_that_finds_the_target(target: float) -> None:
    labels, probs = _synthetic_binary(300, seed=2, separation=1.0)
    scores = probs[:, 1]
    threshold = choose_threshold(labels, scores, rule=f"sensitivity:{target}")
    m = binary_metrics(labels, scores, threshold)
    assert m["sensitivity"] >= target
    # a higher threshold that changes any prediction (the lowest score above it is still called positive)
    # finds fewer positives than the target: no more specific threshold would have done
    for other in np.unique(scores[scores > threshold])[1:]:
        assert binary_metrics(labels, scores, float(other))["sensitivity"] < target


@pytest.mark.parametrize(
    "rule", ["sensitivity", "sensitivity:", "sensitivity:1", "sensitivity:0", "sens:0.9"]
)
def test_sensitivity_rule_needs_a_target_inside_0_1(rule: str) -> None:
    with pytest.raises(ConfigError, match=r"sensitivity:<target>.*0\.97"):
        choose_threshold(HAND_LABELS, HAND_SCORES, rule=rule)
    with pytest.raises(ConfigError, match="threshold_rule"):
        load_config(None, {"dataset": "x", "threshold_rule": rule})


def test_choose_threshold_edge_cases() -> None:
    assert choose_threshold(np.zeros(5, dtype=int), np.linspace(0.1, 0.9, 5)) == 0.5
    extreme = choose_threshold(np.array([0, 0, 1, 1]), np.array([0.0, 0.0, 1.0, 1.0]))
    assert 0 < extreme < 1
    with pytest.raises(ConfigError, match="youden.*accuracy.*f1"):
        choose_threshold(HAND_LABELS, HAND_SCORES, rule="magic")


# --------------------------------------------------------------------------- multi-class


def test_multiclass_metrics_match_hand_computed_case() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 1, 1, 1, 2, 0])
    probs = np.full((6, 3), 0.1)
    probs[np.arange(6), predicted] = 0.8
    m = multiclass_metrics(labels, probs, ["a", "b", "c"])
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["acc"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    precision = [c["precision"] for c in m["per_class"]]
    assert precision == pytest.approx([1 / 2, 2 / 3, 1.0])
    assert [c["support"] for c in m["per_class"]] == [2, 2, 2]
    assert [c["class"] for c in m["per_class"]] == ["a", "b", "c"]
    assert m["auc"] == pytest.approx(roc_auc_score(labels, probs, multi_class="ovr", average="macro"))


def test_multiclass_metrics_absent_class_is_none() -> None:
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1]])
    m = multiclass_metrics(labels, probs, ["a", "b", "c"])
    absent = m["per_class"][2]
    assert absent["support"] == 0 and absent["auc"] is None and absent["recall"] is None
    assert m["auc"] is not None
    json.dumps(m, allow_nan=False)


def test_multiclass_metrics_refuses_wrong_class_count() -> None:
    labels, probs = _synthetic_multiclass(20, 3, seed=0)
    with pytest.raises(BadInputError):
        multiclass_metrics(labels, probs, ["a", "b"])


# --------------------------------------------------------------------------- calibration


def test_calibration_hand_computed_ece() -> None:
    # confidences 0.95, 0.95 (one right) and 0.65, 0.65 (both right):
    # ECE = 0.5 * |0.5 - 0.95| + 0.5 * |1.0 - 0.65| = 0.4
    probs = np.array([[0.05, 0.95], [0.05, 0.95], [0.65, 0.35], [0.35, 0.65]])
    labels = np.array([1, 0, 0, 1])
    calib = calibration(labels, probs, n_bins=10)
    assert calib["ece"] == pytest.approx(0.4)
    counts = [b["count"] for b in calib["bins"]]
    assert counts[9] == 2 and counts[6] == 2 and sum(counts) == 4
    assert calib["bins"][0]["accuracy"] is None  # empty bin


def test_calibration_small_when_calibrated_large_when_overconfident() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(20000)
    labels = (rng.random(20000) < p).astype(int)  # outcomes drawn with exactly the stated probability
    calibrated = calibration(labels, _binary_probs(p))["ece"]
    sharpened = p**4 / (p**4 + (1 - p) ** 4)  # same ranking, pushed towards 0 and 1
    overconfident = calibration(labels, _binary_probs(sharpened))["ece"]
    assert calibrated < 0.02
    assert overconfident > 0.1


# --------------------------------------------------------------------------- bootstrap


def _auc_fn(labels: np.ndarray, probs: np.ndarray) -> dict[str, float | None]:
    return {"auc": rank_auc(labels, probs[:, 1]), "undefined": None, "name": "not a number"}


def test_bootstrap_ci_brackets_estimate_and_narrows_with_more_data() -> None:
    widths = []
    for n in (100, 2000):
        labels, probs = _synthetic_binary(n, seed=n)
        point = roc_auc_score(labels, probs[:, 1])
        ci = bootstrap_ci(_auc_fn, labels, probs, n_boot=300, seed=0)
        lo, hi = ci["auc"]
        assert lo < point < hi
        assert ci["undefined"] is None
        assert "name" not in ci
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2  # ~sqrt(20) narrower in theory


def _mean_fn(labels: np.ndarray, scores: np.ndarray) -> dict[str, float | None]:
    return {"mean": float(scores.mean())}


def test_bootstrap_ci_width_matches_normal_theory_for_a_mean() -> None:
    # the mean of 400 uniform scores has SE sigma/sqrt(n); a 95% CI spans about 2 * 1.96 * SE
    scores = np.random.default_rng(11).random(400)
    labels = np.zeros(400, dtype=int)
    expected_width = 2 * 1.96 * scores.std() / np.sqrt(scores.size)
    lo, hi = bootstrap_ci(_mean_fn, labels, scores, n_boot=1000, seed=0)["mean"]
    assert hi - lo == pytest.approx(expected_width, rel=0.15)
    lo50, hi50 = bootstrap_ci(_mean_fn, labels, scores, n_boot=1000, seed=0, alpha=0.5)["mean"]
    assert lo < lo50 < hi50 < hi


def test_bootstrap_ci_is_stratified_and_reproducible() -> None:
    labels = np.array([1, 1] + [0] * 48)  # unstratified resamples would often hold no positive
    scores = np.linspace(0, 1, 50)
    probs = _binary_probs(scores)
    seen_counts = set()

    def fn(lab: np.ndarray, pro: np.ndarray) -> dict[str, float | None]:
        seen_counts.add(int(lab.sum()))
        return {"auc": rank_auc(lab, pro[:, 1])}

    first = bootstrap_ci(fn, labels, probs, n_boot=200, seed=7)
    assert seen_counts == {2}
    assert first["auc"] is not None
    assert bootstrap_ci(fn, labels, probs, n_boot=200, seed=7) == first


# --------------------------------------------------------------------------- evaluate_split


def test_evaluate_split_binary_is_complete_json() -> None:
    labels, probs = _synthetic_binary(600, seed=5)
    result = evaluate_split(labels, probs, ["normal", "disease"], threshold=0.4, n_boot=1000)
    for key in (
        "auc",
        "acc",
        "acc_at_0_5",
        "sensitivity",
        "specificity",
        "ppv",
        "npv",
        "f1",
        "balanced_accuracy",
        "threshold",
        "n",
        "prevalence",
        "confusion_matrix",
        "calibration",
    ):
        assert key in result
    assert result["threshold"] == 0.4
    assert set(result["ci"]) == {
        "auc",
        "acc",
        "sensitivity",
        "specificity",
        "ppv",
        "npv",
        "f1",
        "balanced_accuracy",
    }
    for key, (lo, hi) in result["ci"].items():
        assert lo <= result[key] <= hi, key
    (tn, fp), (fn, tp) = result["confusion_matrix"]
    assert tn + fp + fn + tp == 600
    assert tp / (tp + fn) == pytest.approx(result["sensitivity"])
    json.dumps(result, allow_nan=False)


def test_evaluate_split_binary_default_threshold_is_0_5() -> None:
    labels, probs = _synthetic_binary(100, seed=2)
    result = evaluate_split(labels, probs, ["a", "b"], n_boot=50)
    assert result["threshold"] == 0.5
    assert result["acc"] == result["acc_at_0_5"]


def test_evaluate_split_multiclass_is_complete() -> None:
    labels, probs = _synthetic_multiclass(600, 9, seed=4)
    result = evaluate_split(labels, probs, [f"c{i}" for i in range(9)], n_boot=1000)
    assert set(result["ci"]) == {"auc", "acc", "balanced_accuracy"}
    assert result["acc_at_0_5"] == result["acc"]
    for key, (lo, hi) in result["ci"].items():
        assert lo <= result[key] <= hi, key
    assert len(result["per_class"]) == 9
    assert np.sum(result["confusion_matrix"]) == 600
    json.dumps(result, allow_nan=False)


# --------------------------------------------------------------------------- plots


def _assert_png(path: Path) -> None:
    assert path.is_file()
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 2000


def test_curve_plots_write_pngs(tmp_path: Path) -> None:
    history = [
        {"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "val_auc": 0.6 + 0.05 * e, "lr": 1e-3 * 0.5**e}
        for e in range(1, 6)
    ]
    history[0]["val_auc"] = None  # an epoch without validation must not break the plot
    _assert_png(plot_training_curves(history, tmp_path / "curves.png"))
    labels, probs = _synthetic_binary(200, seed=0)
    _assert_png(plot_roc(labels, probs, ["neg", "pos"], tmp_path / "roc.png", threshold=0.4))
    _assert_png(plot_pr(labels, probs, ["neg", "pos"], tmp_path / "pr.png"))
    m_labels, m_probs = _synthetic_multiclass(200, 4, seed=0)
    classes = ["a", "b", "c", "d"]
    _assert_png(plot_roc(m_labels, m_probs, classes, tmp_path / "roc_multi.png"))
    _assert_png(plot_pr(m_labels, m_probs, classes, tmp_path / "pr_multi.png"))


def test_confusion_and_reliability_plots_write_pngs(tmp_path: Path) -> None:
    _assert_png(plot_confusion([[50, 3], [0, 0]], ["neg", "pos"], tmp_path / "plots" / "confusion.png"))
    labels, probs = _synthetic_binary(300, seed=1)
    _assert_png(plot_reliability(calibration(labels, probs), tmp_path / "reliability.png"))


@pytest.mark.parametrize("shape", [(12, 1, 16, 16), (12, 3, 16, 16), (12, 1, 6, 16, 16)])
def test_examples_plot_handles_2d_rgb_and_3d(tmp_path: Path, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    images = rng.normal(100, 30, size=shape)  # any value range
    labels, probs = _synthetic_binary(shape[0], seed=3, separation=0.5)
    _assert_png(plot_examples(images, labels, probs, ["neg", "pos"], 0.5, tmp_path / "ex.png", n=4))


def test_examples_plot_without_wrong_cases(tmp_path: Path) -> None:
    labels = np.array([0, 1, 2, 0])
    probs = np.eye(3)[labels] * 0.9 + 0.1 / 3
    images = np.zeros((4, 1, 8, 8))  # constant images must not divide by zero
    _assert_png(plot_examples(images, labels, probs, ["a", "b", "c"], None, tmp_path / "ex.png"))


# --------------------------------------------------------------------------- report


def _report_inputs(tmp_path: Path) -> tuple[dict, dict, dict, dict]:
    labels, probs = _synthetic_binary(120, seed=9)
    val_labels, val_probs = _synthetic_binary(80, seed=10)
    threshold = choose_threshold(val_labels, val_probs[:, 1])
    classes = ["normal", "pneumonia"]
    metrics = {
        "val": evaluate_split(val_labels, val_probs, classes, threshold=threshold, n_boot=50),
        "test": evaluate_split(labels, probs, classes, threshold=threshold, n_boot=50),
        "threshold_rule": "youden",
        "epochs_trained": 7,
        "best_epoch": 5,
        "train_time_s": 12.5,
    }
    metrics["test"]["ppv"] = None  # exercised as "n/a"
    plots = {
        "roc": plot_roc(labels, probs, classes, tmp_path / "plots" / "roc.png", threshold=threshold),
        "calibration": plot_reliability(metrics["test"]["calibration"], tmp_path / "plots" / "cal.png"),
    }
    dataset = {
        "name": "pneumoniamnist",
        "source": "https://medmnist.com <MedMNIST v2>",
        "modality": "X-ray",
        "spatial_dims": 2,
        "image_shape": [28, 28],
        "channels": 1,
        "classes": classes,
        "splits": {
            "train": {"size": 4708, "label_counts": {"normal": 1214, "pneumonia": 3494}},
            "test": {"size": 624, "label_counts": {"normal": 234, "pneumonia": 390}},
        },
        "licence": "CC BY 4.0",
        "citation": "Yang et al., Scientific Data 2023",
    }
    config = {"model": {"name": "densenet121", "dropout": 0.1}, "train": {"epochs": 10, "lr": 0.001}}
    return dataset, config, metrics, plots


def test_report_is_one_self_contained_html_file(tmp_path: Path) -> None:
    dataset, config, metrics, plots = _report_inputs(tmp_path)
    out_dir = tmp_path / "run"
    path = write_report(
        out_dir / "report.html",
        title="Pneumonia <script>alert(1)</script>",
        dataset=dataset,
        config=config,
        metrics=metrics,
        plots=plots,
        notes=["Trained on CPU & small images."],
    )
    assert [p.name for p in out_dir.iterdir()] == ["report.html"]  # no temporary file left behind
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("data:image/png;base64,") == 2
    for attribute in re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page):
        assert not attribute.lower().startswith(("http:", "https:", "//")), attribute
    assert "<link" not in page and "<script" not in page
    assert "&lt;script&gt;" in page and "&lt;MedMNIST v2&gt;" in page and "CPU &amp; small" in page


def test_report_content_reads_for_a_reviewer(tmp_path: Path) -> None:
    dataset, config, metrics, plots = _report_inputs(tmp_path)
    page = write_report(
        tmp_path / "report.html", title="Run", dataset=dataset, config=config, metrics=metrics, plots=plots
    ).read_text(encoding="utf-8")
    test = metrics["test"]
    assert f"{test['auc']:.3f}" in page
    lo, hi = test["ci"]["auc"]
    assert f"{lo:.3f} – {hi:.3f}" in page
    assert f"{test['threshold']:.3f}" in page
    assert "validation set only" in page and "youden" in page
    assert "n/a" in page  # the None PPV
    assert "model.name" in page and "densenet121" in page
    assert "pneumoniamnist" in page and "3494" in page and "CC BY 4.0" in page
    assert "epochs trained" in page


def test_report_for_multiclass_shows_per_class_table(tmp_path: Path) -> None:
    labels, probs = _synthetic_multiclass(90, 3, seed=1)
    split = evaluate_split(labels, probs, ["a", "b", "c"], n_boot=30)
    page = write_report(
        tmp_path / "r.html",
        title="Multi",
        dataset={"name": "x", "classes": ["a", "b", "c"]},
        config={},
        metrics={"val": split, "test": split},
        plots={"examples": tmp_path / "missing.png"},
    ).read_text(encoding="utf-8")
    assert "Per class" in page and "argmax" in page
    assert "missing" in page
