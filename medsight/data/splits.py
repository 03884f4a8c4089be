"""Seeded, stratified, patient-level splits: no patient's images in two splits."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from medsight.errors import BadInputError

MIN_IMAGES_TO_SPLIT = 10


def hold_out(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of about ``fraction`` of the images, stratified by label, whole patients only."""
    n_folds = max(2, min(round(1 / fraction), len(np.unique(groups))))
    folds = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    _, held_out = next(folds.split(np.zeros(len(labels)), labels, groups))
    mask = np.zeros(len(labels), dtype=bool)
    mask[held_out] = True
    return mask


def patient_split(
    labels: np.ndarray,
    patient_ids: np.ndarray | None,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> np.ndarray:
    """Assign 'train', 'val' or 'test' to every image, keeping each patient in one split.

    Without patient ids every image counts as its own patient.
    """
    n = len(labels)
    if n < MIN_IMAGES_TO_SPLIT:
        raise BadInputError(
            f"only {n} labelled images: at least {MIN_IMAGES_TO_SPLIT} are needed to make train, "
            "validation and test splits."
        )
    groups = np.asarray(patient_ids) if patient_ids is not None else np.arange(n)
    if len(np.unique(groups)) < 3:
        raise BadInputError("fewer than 3 patients: cannot make patient-level train/val/test splits.")
    assignment = np.full(n, "train", dtype=object)
    test = hold_out(labels, groups, test_fraction, seed)
    assignment[test] = "test"
    rest = np.flatnonzero(~test)
    val = hold_out(labels[rest], groups[rest], val_fraction / (1 - test_fraction), seed + 1)
    assignment[rest[val]] = "val"
    return assignment.astype(str)


def check_no_patient_leak(
    splits: np.ndarray, patient_ids: np.ndarray, row_numbers: Sequence[int] | None = None
) -> None:
    """Refuse given splits that put one patient in two of them (names rows, never patient ids).

    ``row_numbers`` are the rows' numbers as the user knows them (CSV lines); default 1, 2, ...
    """
    numbers = list(row_numbers) if row_numbers is not None else list(range(1, len(splits) + 1))
    seen: dict[str, tuple[str, int]] = {}
    for row, split, patient in zip(numbers, splits, patient_ids, strict=True):
        first = seen.setdefault(str(patient), (split, row))
        if first[0] != split:
            raise BadInputError(
                f"rows {first[1]} and {row} belong to the same patient but are in splits "
                f"'{first[0]}' and '{split}': a patient's images must all be in one split. "
                "Fix the split column, or leave it out and medsight makes a patient-level split."
            )
