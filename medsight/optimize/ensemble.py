"""``medsight ensemble``: average several runs' probabilities into a run folder of its own.

The folder holds ``ensemble.json`` (member run folders, weights, TTA flag) instead of a
checkpoint, and is evaluated like any run: a threshold chosen on validation only, test metrics
with CIs, plots and ``report.html``. ``load_ensemble`` gives it the ``predict_images`` interface of
``TrainedModel``, so whatever serves a run can serve an ensemble. Members must be trained on the
same data set with the same classes; each prepares images with its own ``InputSpec``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from medsight.data.registry import load_dataset
from medsight.errors import BadInputError, ConfigError, DataNotFoundError
from medsight.evaluate import ecg, plots
from medsight.evaluate.metrics import choose_threshold, evaluate_split
from medsight.evaluate.report import write_report
from medsight.evaluate.run import summary_line
from medsight.optimize.common import Log, staged_folder, write_json
from medsight.train.inference import TrainedModel, load_trained_model
from medsight.train.run_folder import set_status, versions

ENSEMBLE_FILE = "ensemble.json"


@dataclass
class Ensemble:
    members: list[TrainedModel]
    member_dirs: list[Path]
    weights: list[float]
    tta: bool
    classes: list[str]
    threshold: float | None
    dataset: str

    @property
    def info(self) -> dict:
        """The first member's inference info (e.g. an ECG model's beat settings, which members must share)."""
        return self.members[0].info

    def predict_images(
        self,
        images: np.ndarray,
        *,
        tta: bool | None = None,
        batch_size: int = 256,
        tabular: np.ndarray | None = None,
    ) -> np.ndarray:
        """Weighted mean of the members' probabilities; ``tta`` defaults to the ensemble's own flag.

        ``tabular``: the encoded table of a fusion data set, read by the members that fuse it.
        """
        use_tta = self.tta if tta is None else tta
        total = sum(
            w * m.predict_images(images, tta=use_tta, batch_size=batch_size, tabular=tabular)
            for w, m in zip(self.weights, self.members, strict=True)
        )
        return np.asarray(total)


def parse_weights(text: str | None, n_members: int) -> list[float]:
    """``"2,1,1"`` -> weights summing to 1; equal weights when none are given."""
    if not text:
        return [1.0 / n_members] * n_members
    try:
        weights = [float(w) for w in text.split(",")]
    except ValueError as err:
        raise ConfigError(f"--weights '{text}': give numbers separated by commas, e.g. 2,1.") from err
    if len(weights) != n_members:
        raise ConfigError(f"--weights has {len(weights)} values for {n_members} runs; give one per run.")
    if any(not np.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise ConfigError(f"--weights '{text}': weights must be non-negative and not all zero.")
    return [w / sum(weights) for w in weights]


def _dataset_of(run_dir: Path, trained: TrainedModel) -> str:
    config_file = run_dir / "config.yaml"
    if config_file.exists():
        recorded = (yaml.safe_load(config_file.read_text()) or {}).get("config", {})
        if recorded.get("dataset"):
            return str(recorded["dataset"])
    return str(trained.info.get("dataset"))


def load_members(run_dirs: Sequence[Path]) -> tuple[list[TrainedModel], str]:
    """Every member's model; refused unless all share one data set and one list of classes."""
    if len(run_dirs) < 2:
        raise ConfigError("an ensemble needs at least two run folders.")
    members = [load_trained_model(Path(d)) for d in run_dirs]
    datasets = [_dataset_of(Path(d), m) for d, m in zip(run_dirs, members, strict=True)]
    if len(set(datasets)) > 1:
        listing = ", ".join(f"{d}: {name}" for d, name in zip(run_dirs, datasets, strict=True))
        raise BadInputError(f"ensemble members must be trained on one data set; got {listing}.")
    for run_dir, member in zip(run_dirs[1:], members[1:], strict=True):
        if member.classes != members[0].classes:
            raise BadInputError(
                f"ensemble members must share their classes: {run_dirs[0]} has {members[0].classes}, "
                f"{run_dir} has {member.classes}."
            )
    return members, datasets[0]


def _plots(folder: Path, dataset, labels, probs, threshold, test: dict) -> dict[str, Path]:
    out = folder / "plots"
    out.mkdir(exist_ok=True)
    classes = dataset.classes
    return {
        "roc": plots.plot_roc(labels, probs, classes, out / "roc.png", threshold=threshold),
        "pr": plots.plot_pr(labels, probs, classes, out / "pr.png"),
        "confusion": plots.plot_confusion(test["confusion_matrix"], classes, out / "confusion.png"),
        "calibration": plots.plot_reliability(test["calibration"], out / "calibration.png"),
        "examples": plots.plot_examples(
            dataset.splits["test"].images.astype(np.float32),
            labels,
            probs,
            classes,
            threshold,
            out / "examples.png",
        ),
    }


def make_ensemble(
    run_dirs: Sequence[Path],
    out: Path,
    *,
    weights: str | None = None,
    tta: bool = False,
    n_boot: int = 1000,
    log: Log = print,
) -> dict:
    """Build, evaluate and write the ensemble's run folder; returns its metrics."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} already holds something; choose a new --out.")
    members, dataset_name = load_members(run_dirs)
    shares = parse_weights(weights, len(members))
    dataset = load_dataset(dataset_name)
    rule = "youden"
    member_config = Path(run_dirs[0]) / "config.yaml"
    if member_config.exists():
        rule = (yaml.safe_load(member_config.read_text()) or {}).get("config", {}).get("threshold_rule", rule)
    ensemble = Ensemble(
        members, [Path(d).resolve() for d in run_dirs], shares, tta, members[0].classes, None, dataset.name
    )
    labels = {s: dataset.splits[s].labels for s in ("val", "test")}
    probs = {
        s: ensemble.predict_images(dataset.splits[s].images, tabular=dataset.splits[s].tabular)
        for s in labels
    }
    binary = len(dataset.classes) == 2
    threshold = choose_threshold(labels["val"], probs["val"][:, 1], rule) if binary else None
    metrics = {
        "dataset": dataset.name,
        "model": f"ensemble of {len(members)}",
        "threshold": threshold,
        "threshold_rule": f"{rule}, chosen on the validation split only" if binary else "argmax",
        **{s: evaluate_split(labels[s], probs[s], dataset.classes, threshold, n_boot=n_boot) for s in labels},
    }
    is_ecg = dataset.modality == "ecg" and binary
    if is_ecg:  # PVC sensitivity/PPV per record, as a single ECG run reports them
        metrics["ecg"] = ecg.ecg_metrics(dataset, probs, threshold)
    record = {
        "members": [str(d) for d in ensemble.member_dirs],
        "weights": shares,
        "tta": tta,
        "dataset": dataset.name,
        "classes": ensemble.classes,
        "combine": "weighted mean of class probabilities",
    }
    with staged_folder(out) as folder:
        write_json(folder / ENSEMBLE_FILE, record)
        config = {"kind": "ensemble", **record, "threshold_rule": rule, "bootstrap": n_boot}
        (folder / "config.yaml").write_text(
            yaml.safe_dump({"config": config, "versions": versions()}, sort_keys=False)
        )
        write_json(folder / "metrics.json", metrics)
        np.savez_compressed(
            folder / "predictions.npz",
            **{f"{k}_probs": v for k, v in probs.items()},
            **{f"{k}_labels": v for k, v in labels.items()},
        )
        figures = _plots(folder, dataset, labels["test"], probs["test"], threshold, metrics["test"])
        if is_ecg:  # beats drawn as traces, and a strip of one test record
            figures.update(ecg.ecg_plots(folder, dataset, "test", probs["test"], threshold))
        report = write_report(
            folder / "report.html",
            title=f"medsight ensemble of {len(members)} runs on {dataset.name}",
            dataset=dataset.info(),
            config=config,
            metrics=metrics,
            plots=figures,
            notes=[
                "Probabilities are the weighted mean of the members' probabilities.",
                "The threshold was chosen on validation only; the test split was looked at once.",
                *(
                    ["Members average test-time augmentation (flips where the anatomy allows)."]
                    if tta
                    else []
                ),
            ],
        )
        set_status(folder, "complete", kind="ensemble", report=str(out / report.name))
    log(summary_line(metrics, "test"))
    if is_ecg:
        log(ecg.ecg_summary(metrics["ecg"], "test"))
    log(f"ensemble: {out} (report: {out / 'report.html'})")
    return metrics


def load_ensemble(run_dir: Path) -> Ensemble:
    record_file = Path(run_dir) / ENSEMBLE_FILE
    if not record_file.exists():
        raise DataNotFoundError(
            f"{run_dir}: no {ENSEMBLE_FILE}; make one with `medsight ensemble RUN... --out`."
        )
    record = json.loads(record_file.read_text())
    members = [load_trained_model(Path(d)) for d in record["members"]]
    threshold = json.loads((Path(run_dir) / "metrics.json").read_text()).get("threshold")
    return Ensemble(
        members,
        [Path(d) for d in record["members"]],
        record["weights"],
        record["tta"],
        record["classes"],
        threshold,
        record["dataset"],
    )


def load_servable(run_dir: Path) -> TrainedModel | Ensemble:
    """A run or an ensemble folder, whichever ``run_dir`` is: both answer ``predict_images``."""
    if (Path(run_dir) / ENSEMBLE_FILE).exists():
        return load_ensemble(run_dir)
    return load_trained_model(run_dir)
