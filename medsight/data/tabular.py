"""Tabular columns beside the images (age, sex, a lab value): checked, encoded, standardised.

A manifest may carry columns about the patient next to each image's path. They become one float
feature vector per image, fitted on the **training split only** and recorded as a ``TabularSpec``
that travels with the data set and the trained model, so a served model encodes a new patient's
values exactly as its training rows were encoded:

- numeric columns: standardised with the training split's mean and sd;
- categorical columns: one-hot over the categories seen in training (a value first met in
  validation, test or serving gets no category, and is counted in a note);
- missing values (empty, NA, N/A, NaN, null, None, ?): imputed (numeric: the training mean, i.e. 0
  after standardisation; categorical: no category) and flagged in a "<column> missing" feature.
  Every imputation is reported in a note, never done silently.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel

from medsight.errors import BadInputError

Kind = Literal["numeric", "categorical"]
MISSING = {"", "na", "n/a", "nan", "null", "none", "?"}


def is_missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return str(value).strip().lower() in MISSING


def parse_numbers(name: str, values: Sequence[object], where: Sequence[str]) -> np.ndarray:
    """Values of a numeric column as float64, NaN where missing; a non-number names its row."""
    out = np.full(len(values), np.nan)
    for k, value in enumerate(values):
        if is_missing(value):
            continue
        try:
            number = float(str(value).strip())
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise BadInputError(
                f"{where[k]}: column '{name}' is numeric but holds {str(value)[:40]!r}. Fix the value, "
                "leave it empty if it is unknown, or declare the column categorical."
            )
        out[k] = number
    return out


class TabularColumn(BaseModel):
    """One declared column and what the training split taught about it."""

    name: str
    kind: Kind
    mean: float = 0.0  # numeric: training mean (also the imputed value)
    std: float = 1.0  # numeric: training sd (1 for a constant column)
    categories: list[str] = []  # categorical: the values seen in training, sorted
    missing_indicator: bool = False  # a 0/1 feature "<name> missing" follows the column's features

    def feature_names(self) -> list[str]:
        names = [self.name] if self.kind == "numeric" else [f"{self.name}={c}" for c in self.categories]
        return names + ([f"{self.name} missing"] if self.missing_indicator else [])

    def encode(self, values: Sequence[object], where: Sequence[str]) -> tuple[np.ndarray, int, int]:
        """(N, k) float32 features, how many values were missing, how many categories were unseen."""
        missing = np.array([is_missing(v) for v in values], dtype=bool)
        if self.kind == "numeric":
            numbers = parse_numbers(self.name, values, where)
            block = np.where(missing, 0.0, (numbers - self.mean) / self.std)[:, None]
            unseen = 0
        else:
            text = [str(v).strip() for v in values]
            index = {c: i for i, c in enumerate(self.categories)}
            block = np.zeros((len(values), len(self.categories)))
            for row, value in enumerate(text):
                if not missing[row] and value in index:
                    block[row, index[value]] = 1.0
            unseen = int(sum(1 for row, v in enumerate(text) if not missing[row] and v not in index))
        if self.missing_indicator:
            block = np.concatenate([block, missing[:, None].astype(float)], axis=1)
        return block.astype(np.float32), int(missing.sum()), unseen


class TabularSpec(BaseModel):
    """How raw column values become the model's tabular input; fitted on the training split."""

    columns: list[TabularColumn]

    @property
    def names(self) -> list[str]:
        """The feature names, in the order of the model's tabular input."""
        return [name for column in self.columns for name in column.feature_names()]

    @property
    def n_features(self) -> int:
        return len(self.names)

    def encode(
        self, raw: Mapping[str, Sequence[object]], where: Sequence[str] | None = None
    ) -> tuple[np.ndarray, list[str]]:
        """Raw values by column -> (N, F) float32 features, and notes on what was imputed."""
        missing_columns = [c.name for c in self.columns if c.name not in raw]
        if missing_columns:
            raise BadInputError(
                f"tabular values missing for {', '.join(missing_columns)}: this model needs "
                f"{', '.join(c.name for c in self.columns)} (give an empty value when one is unknown)."
            )
        n = len(raw[self.columns[0].name])
        where = where or [f"row {k + 1}" for k in range(n)]
        blocks, notes = [], []
        for column in self.columns:
            block, n_missing, n_unseen = column.encode(raw[column.name], where)
            blocks.append(block)
            if n_missing:
                fill = f"the training mean {column.mean:.4g}" if column.kind == "numeric" else "no category"
                notes.append(f"{column.name}: {n_missing} of {n} value(s) missing, imputed with {fill}")
            if n_unseen:
                notes.append(
                    f"{column.name}: {n_unseen} value(s) not among the training categories "
                    f"({', '.join(column.categories)}), encoded as no category"
                )
        return np.concatenate(blocks, axis=1), notes

    def encode_row(self, values: Mapping[str, object]) -> tuple[np.ndarray, list[str]]:
        """One patient's values (e.g. from a request) -> (1, F) features and notes."""
        return self.encode({k: [v] for k, v in values.items()}, ["the tabular values"])


def fit_tabular(
    raw: Mapping[str, Sequence[object]],
    kinds: Mapping[str, Kind],
    train: np.ndarray,
    where: Sequence[str],
) -> tuple[TabularSpec, np.ndarray, list[str]]:
    """Fit each column on the rows where ``train`` is True; returns the spec, every row's features
    (N, F) and notes (what was imputed, which categories were unseen)."""
    columns = [_fit_column(name, raw[name], kind, train, where) for name, kind in kinds.items()]
    spec = TabularSpec(columns=columns)
    features, notes = spec.encode(raw, where)
    return spec, features, notes


def _fit_column(
    name: str, values: Sequence[object], kind: Kind, train: np.ndarray, where: Sequence[str]
) -> TabularColumn:
    missing = np.array([is_missing(v) for v in values], dtype=bool)
    indicator = bool(missing.any())  # the data set's structure, not a statistic: any row may decide it
    seen = train & ~missing
    if not seen.any():
        raise BadInputError(
            f"tabular column '{name}' has no value in the training split: nothing to learn it from. "
            "Fill it in for training rows or leave the column out."
        )
    if kind == "categorical":
        categories = sorted({str(v).strip() for v, keep in zip(values, seen, strict=True) if keep})
        return TabularColumn(name=name, kind=kind, categories=categories, missing_indicator=indicator)
    numbers = parse_numbers(name, values, where)[seen]
    std = float(numbers.std())
    return TabularColumn(
        name=name,
        kind=kind,
        mean=float(numbers.mean()),
        std=std if std > 0 else 1.0,  # a constant column stays at 0, not NaN
        missing_indicator=indicator,
    )
