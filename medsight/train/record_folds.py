"""Out-of-fold predictions over the training and validation patients, to set the operating threshold.

A threshold chosen on a handful of validation patients follows their quirks: on MIT-BIH's three
validation records the PVC threshold swung from 0.49 to 0.76 across seeds, and the PPV on new
patients swung with it. Here the patients of the training and validation splits are dealt into
``k`` folds; each fold is held out once while a model is trained, with the run's own settings, on
the rest (its training patients train, its validation patients pick the checkpoint, exactly as in
the run). Every held-out patient's predictions come from a model that never saw that patient, and
the pooled predictions of all of them (``threshold_pool.npz`` in the run folder) are where
evaluation chooses the threshold. The run's model itself is trained as before; the fold models
are thrown away.

Patients are dealt within each split in order of their share of positive cases, so every fold
holds out light and heavy burdens alike (the data set's split is stratified the same way).

Off by default (``threshold_pool: val``): on MIT-BIH it did not help. Nested check, never reading
the test records: training records 108 (noisy) and 119 held out, the run trained on 100, 102, 123,
200 with validation 106, 114, 121, f1 rule, seeds 0, 1, 2. Thresholds from the pool of the 7
records' 14342 out-of-fold beats were 0.74, 0.88, 0.72 against 0.79, 0.81, 0.85 from validation;
all 17 PVCs of 108 were found either way, but its false alarms went from 11, 9, 16 to 14, 5, 48
(and on the validation records from 8, 8, 10 to 10, 8, 31). The fold models' probabilities are not
calibrated like the run's own model, whose validation scores track it better. A pool rule aiming
at PPV ≥ 0.9 with sensitivity ≥ 0.95 did worse still (41, 15, 227 false alarms on 108). Each run
took 3-6 minutes instead of about 1.
"""

from __future__ import annotations

import dataclasses
import io
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medsight.data.dataset import ImageDataset, Split
from medsight.train.config import TrainConfig
from medsight.train.inference import load_trained_model
from medsight.train.run_folder import atomic_write_bytes

Log = Callable[[str], None]
POOL_FILE = "threshold_pool.npz"
FOLDS = 3


def pool_unavailable(dataset: ImageDataset, folds: int = FOLDS) -> str | None:
    """Why ``dataset`` cannot give an out-of-fold pool, or None when it can."""
    if not isinstance(dataset, ImageDataset):
        return "the pool is for classifiers; this data set is of another task"
    if dataset.n_classes != 2 or dataset.heads:
        return "the pool sets one binary threshold; this data set has more classes or labels"
    train, val = (dataset.splits[name].patient_ids for name in ("train", "val"))
    if train is None or val is None:
        return "its cases carry no patient ids, so patients cannot be held out whole"
    if len(set(train)) < folds or len(set(val)) < 2:
        return (
            f"it needs at least {folds} training and 2 validation patients "
            f"(has {len(set(train))} and {len(set(val))})"
        )
    return None


def deal_patients(split: Split, folds: int) -> list[list[str]]:
    """The split's patients dealt into ``folds`` lists, in order of their share of positives."""
    ids = split.patient_ids.astype(str)
    burden = {p: float(split.labels[ids == p].mean()) for p in np.unique(ids)}
    ranked = sorted(burden, key=lambda p: (burden[p], p))
    return [ranked[k::folds] for k in range(folds)]


def held_out_patients(dataset: ImageDataset) -> list[set[str]]:
    """Fold by fold, the patients it holds out: a share of the training and of the validation ones."""
    dealt = [deal_patients(dataset.splits[name], FOLDS) for name in ("train", "val")]
    return [set(dealt[0][k] + dealt[1][k]) for k in range(FOLDS)]


def _rows(split: Split, keep: np.ndarray) -> Split:
    return Split(
        split.images[keep],
        split.labels[keep],
        split.patient_ids[keep],
        None if split.tabular is None else split.tabular[keep],
    )


def fold_dataset(dataset: ImageDataset, held_out: set[str]) -> ImageDataset:
    """``dataset`` with ``held_out`` patients (of training and validation) as its test split."""
    train, val = dataset.splits["train"], dataset.splits["val"]
    out = {
        name: np.isin(s.patient_ids.astype(str), list(held_out))
        for name, s in (("train", train), ("val", val))
    }
    test = [_rows(s, out[name]) for name, s in (("train", train), ("val", val))]
    splits = {
        "train": _rows(train, ~out["train"]),
        "val": _rows(val, ~out["val"]),
        "test": Split(
            *(np.concatenate([getattr(t, f) for t in test]) for f in ("images", "labels", "patient_ids")),
            None if train.tabular is None else np.concatenate([t.tabular for t in test]),
        ),
    }
    return dataclasses.replace(dataset, splits=splits)


def out_of_fold_pool(
    config: TrainConfig, dataset: ImageDataset, train_fold: Callable[[ImageDataset, Path], None], log: Log
) -> dict[str, np.ndarray]:
    """Train one model per fold (``train_fold`` writes a checkpoint into the folder it is given) and
    return every held-out case's positive-class probability, label and fold, and the patients' count.

    Patient ids stay out of the pool and the log (they may be identifying); fold ``k`` holds the
    cases of ``held_out_patients(dataset)[k]``, in the data set's order."""
    parts: dict[str, list[np.ndarray]] = {"probs": [], "labels": [], "fold": []}
    folds = held_out_patients(dataset)
    for k, held_out in enumerate(folds):
        fold = fold_dataset(dataset, held_out)
        log(f"threshold pool: fold {k + 1}/{FOLDS}, {len(held_out)} patients held out")
        with tempfile.TemporaryDirectory(prefix="medsight-fold-") as folder:
            train_fold(fold, Path(folder))
            test = fold.splits["test"]
            probs = load_trained_model(Path(folder)).predict_images(
                test.images, tta=bool(config.tta), tabular=test.tabular
            )
        parts["probs"].append(probs[:, 1])
        parts["labels"].append(test.labels)
        parts["fold"].append(np.full(len(test), k))
    pool = {name: np.concatenate(values) for name, values in parts.items()}
    return {**pool, "patients": np.array(sum(len(h) for h in folds))}


def threshold_pool(
    config: TrainConfig,
    dataset: ImageDataset,
    run_dir: Path,
    train_fold: Callable[[ImageDataset, Path], None],
    log: Log,
) -> None:
    """Write the run's out-of-fold pool, or log why the threshold will come from validation instead."""
    if read_pool(run_dir) is not None:  # resumed after the pool was written
        return
    why_not = pool_unavailable(dataset)
    if why_not:
        log(f"threshold from the validation split: no out-of-fold pool, as {why_not}")
        return
    pool = out_of_fold_pool(config, dataset, train_fold, log)
    write_pool(run_dir, pool)
    log(f"threshold pool: {len(pool['labels'])} out-of-fold predictions of {int(pool['patients'])} patients")


def write_pool(run_dir: Path, pool: dict[str, np.ndarray]) -> Path:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **pool)
    atomic_write_bytes(run_dir / POOL_FILE, buffer.getvalue())
    return run_dir / POOL_FILE


def read_pool(run_dir: Path) -> dict[str, np.ndarray] | None:
    path = Path(run_dir) / POOL_FILE
    if not path.is_file():
        return None
    with np.load(path) as saved:
        return {name: saved[name] for name in saved.files}
