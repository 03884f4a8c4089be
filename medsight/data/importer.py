"""``medsight data import``: register a user's own data set under MEDSIGHT_HOME.

The source is never modified. A folder or CSV data set is read once, checked file by file,
resized to one shape and kept as an array file in ``$MEDSIGHT_HOME/datasets/NAME/``; an npz in
MedMNIST layout is checked and referenced where it is. Either everything is registered or nothing.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from monai.transforms import Resize

from medsight.data.manifest import ManifestRow, read_csv_manifest, read_folder_manifest
from medsight.data.npz import load_npz_dataset
from medsight.data.splits import check_no_patient_leak, hold_out, patient_split
from medsight.data.tabular import Kind, fit_tabular, parse_numbers
from medsight.errors import BadInputError
from medsight.io import read_image
from medsight.progress import progress_bar

DICOM_MODALITIES = {
    "CR": "xray",
    "DX": "xray",
    "DR": "xray",
    "MG": "mammography",
    "CT": "ct",
    "MR": "mr",
    "US": "ultrasound",
    "PT": "pet",
    "NM": "nuclear",
    "OT": "unknown",
    "SC": "unknown",
}


@dataclass
class ImportReport:
    name: str
    folder: Path
    n_images: int
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was imputed in tabular columns, and why


@dataclass(frozen=True)
class Columns:
    """The manifest columns beyond path/patient_id/split: label(s) and tabular (``data/tabular.py``)."""

    labels: tuple[str, ...] = ("label",)
    tabular: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()  # the tabular columns that are categories, not numbers

    @property
    def kinds(self) -> dict[str, Kind]:
        return {c: "categorical" if c in self.categorical else "numeric" for c in self.tabular}

    @property
    def plain(self) -> bool:
        return self.labels == ("label",) and not self.tabular


def dataset_name_from(path: Path) -> str:
    stem = path.name.split(".")[0] if path.is_file() else path.name
    return re.sub(r"[^a-z0-9_-]+", "-", stem.lower()).strip("-") or "dataset"


def check_dataset_name(name: str) -> None:
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", name):
        raise BadInputError(
            f"data set name '{name}' is not valid: use lower-case letters, digits, '-' and '_' (up to 64)."
        )


def import_dataset(
    source: Path,
    registry_dir: Path,
    *,
    name: str,
    classes: list[str] | None = None,
    size: int | None = None,
    modality: str | None = None,
    seed: int = 0,
    skip_bad: bool = False,
    labels: Sequence[str] = ("label",),
    tabular: Sequence[str] = (),
    categorical: Sequence[str] = (),
) -> ImportReport:
    """Check and register ``source``; writes ``registry_dir/NAME`` whole or not at all.

    ``labels`` (several: one head each), ``tabular`` and ``categorical`` name CSV manifest columns.
    """
    check_dataset_name(name)
    columns = _check_columns(labels, tabular, categorical)
    source = source.expanduser().resolve()
    if not source.exists():
        raise BadInputError(f"{source}: no such file or folder.")
    final = registry_dir / name
    registry_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=registry_dir))
    try:
        if not columns.plain and (source.is_dir() or source.suffix.lower() == ".npz"):
            raise BadInputError(
                f"{source}: label and tabular columns are read from a CSV manifest; give one instead."
            )
        if source.suffix.lower() == ".npz":
            report = _import_npz(source, staging, name, classes, modality)
        elif source.is_file():
            rows = read_csv_manifest(source, columns.labels, columns.tabular)
            _check_numbers(rows, columns, source)  # before reading any image: a typo fails fast
            report = _import_manifest(
                rows, staging, name, classes, size, modality, seed, skip_bad, source, columns
            )
        else:
            rows = read_folder_manifest(source)
            report = _import_manifest(rows, staging, name, classes, size, modality, seed, skip_bad, source)
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
        report.folder = final
        return report
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def register_record(registry: Path, record: dict) -> Path:
    """Write ``registry/NAME/dataset.json`` for a data set whose files stay where they are, whole or not
    at all (staged, then renamed over any older record of that name); returns the folder."""
    registry.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{record['name']}-", dir=registry))
    try:
        _write_record(staging, record)
        final = registry / record["name"]
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
        return final
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _write_record(folder: Path, record: dict) -> None:
    (folder / "dataset.json").write_text(json.dumps(record, indent=2))


def _import_npz(source: Path, staging: Path, name: str, classes, modality) -> ImportReport:
    dataset = load_npz_dataset(source, name, classes=classes, modality=modality or "unknown")
    _write_record(
        staging,
        {
            "name": name,
            "kind": "npz",
            "source": str(source),
            "classes": dataset.classes,
            "modality": dataset.modality,
            "spatial_dims": dataset.spatial_dims,
        },
    )
    return ImportReport(name, staging, sum(len(s) for s in dataset.splits.values()))


def _import_manifest(
    rows: list[ManifestRow],
    staging: Path,
    name: str,
    classes,
    size,
    modality,
    seed,
    skip_bad: bool,
    source: Path,
    columns: Columns = Columns(),
) -> ImportReport:
    classes = _check_labels(rows, classes, source)
    images, kept, problems, modalities = [], [], [], set()
    for row in progress_bar(rows, description=f"reading {len(rows)} images"):
        try:
            if not row.path.exists():  # a file, or a DICOM series folder or zip (read as one volume)
                raise BadInputError(f"{row.path}: no such file or series folder.")
            image = read_image(row.path)
        except BadInputError as err:
            problems.append(f"row {row.line}: {err}")
            continue
        images.append(image.array)
        kept.append(row)
        modalities.add(image.metadata.get("modality"))
    if problems and not skip_bad:
        shown = "\n  ".join(problems[:10]) + (
            f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        )
        raise BadInputError(
            f"{len(problems)} of {len(rows)} images cannot be used; nothing was imported:\n  {shown}\n"
            "Fix or remove these rows, or pass --skip-bad to import the rest."
        )
    array = _to_one_shape(images, kept, size)
    labels = np.array([classes.index(r.label) for r in kept], dtype=np.int64)
    groups, splits = _splits_for(kept, labels, seed)
    arrays, extra, notes = _columns_arrays(kept, columns, classes, splits, source)
    np.savez(
        staging / "images.npz",
        images=array,
        labels=arrays.pop("labels", labels),
        splits=splits,
        groups=groups,
        **arrays,
    )
    dicom_modality = next((DICOM_MODALITIES.get(m or "") for m in modalities if m), None)
    _write_record(
        staging,
        {
            "name": name,
            "kind": "images",
            "source": str(source),
            "classes": classes,
            "modality": modality or dicom_modality or "unknown",
            "spatial_dims": array.ndim - 2,
            "image_shape": list(array.shape[2:]),
            "channels": int(array.shape[1]),
            "seed": seed,
            **extra,
        },
    )
    return ImportReport(name, staging, len(kept), problems, notes)


def _check_columns(labels: Sequence[str], tabular: Sequence[str], categorical: Sequence[str]) -> Columns:
    columns = Columns(tuple(labels), tuple(tabular), tuple(categorical))
    named = [*columns.labels, *columns.tabular]
    problems = [
        f"'{c}' is categorical but not tabular" for c in columns.categorical if c not in columns.tabular
    ]
    problems += [f"'{c}' is named twice" for c in sorted({c for c in named if named.count(c) > 1})]
    problems += [
        f"'{c}' is a reserved column" for c in columns.tabular if c in ("path", "patient_id", "split")
    ]
    if not columns.labels:
        problems.append("no label column is named")
    if problems:
        raise BadInputError(
            f"manifest columns: {'; '.join(problems)}. Name each label and tabular column once "
            "(--labels a,b --tabular age,sex --categorical sex)."
        )
    return columns


def _check_numbers(rows: list[ManifestRow], columns: Columns, source: Path) -> None:
    where = [f"{source}, row {r.line}" for r in rows]
    for name, kind in columns.kinds.items():
        if kind == "numeric":
            parse_numbers(name, [r.extra[name] for r in rows], where)


def _columns_arrays(
    rows: list[ManifestRow], columns: Columns, classes: list[str], splits: np.ndarray, source: Path
) -> tuple[dict[str, np.ndarray], dict, list[str]]:
    """Arrays and dataset.json entries for several labels and tabular columns (none for a plain manifest).

    Tabular features are fitted on the training split only (``fit_tabular``).
    """
    arrays: dict[str, np.ndarray] = {}
    extra: dict = {}
    notes: list[str] = []
    if len(columns.labels) > 1:
        heads = {columns.labels[0]: classes}
        for head in columns.labels[1:]:
            heads[head] = _check_labels([_relabel(r, head) for r in rows], None, source, head)
        arrays["labels"] = np.stack(
            [[heads[h].index(r.label if h == columns.labels[0] else r.extra[h]) for h in heads] for r in rows]
        ).astype(np.int64)
        extra["heads"] = heads
    if columns.tabular:
        raw = {name: [r.extra[name] for r in rows] for name in columns.tabular}
        where = [f"{source}, row {r.line}" for r in rows]
        spec, features, notes = fit_tabular(raw, columns.kinds, splits == "train", where)
        arrays["tabular"] = features
        extra["tabular"] = spec.model_dump()
    return arrays, extra, notes


def _relabel(row: ManifestRow, head: str) -> ManifestRow:
    return ManifestRow(row.line, row.path, row.extra[head], row.patient_id, row.split)


def _check_labels(
    rows: list[ManifestRow], classes: list[str] | None, source: Path, column: str = "label"
) -> list[str]:
    found = sorted({r.label for r in rows}, key=lambda s: (len(s), s) if s.isdigit() else (0, s))
    if classes:
        unknown = next((r for r in rows if r.label not in classes), None)
        if unknown:
            raise BadInputError(
                f"{source}, row {unknown.line}: label '{unknown.label}' is not one of the classes "
                f"{', '.join(classes)}."
            )
        return list(classes)
    if len(found) < 2:
        raise BadInputError(
            f"{source}: every image has the {column} '{found[0]}'; a classifier needs two classes."
        )
    return found


def _to_one_shape(images: list[np.ndarray], rows: list[ManifestRow], size: int | None) -> np.ndarray:
    """Resize every image to one shape and one channel count (grey is repeated when any is colour)."""
    if not images:
        raise BadInputError("no image could be read.")
    dims = images[0].ndim - 1
    for image, row in zip(images, rows, strict=True):
        if image.ndim - 1 != dims:
            raise BadInputError(
                f"row {row.line}: {row.path.name} is {image.ndim - 1}D but the first image is {dims}D; "
                "a data set holds only 2D images or only 3D volumes."
            )
    channels = 3 if any(i.shape[0] == 3 for i in images) else 1
    if size is None:
        median_side = float(np.median([min(i.shape[1:]) for i in images]))
        size = int(np.clip(median_side, 28, 64 if dims == 2 else 32))
    resize = Resize(spatial_size=(size,) * dims, mode="area")
    out = np.empty((len(images), channels, *(size,) * dims), dtype=np.float32)
    for k, image in enumerate(progress_bar(images, description=f"resizing to {size}^{dims}")):
        if image.shape[0] != channels:
            image = np.repeat(image[:1], channels, axis=0) if channels == 3 else image.mean(0, keepdims=True)
        out[k] = np.asarray(resize(torch.from_numpy(np.ascontiguousarray(image))))
    return out


def _splits_for(rows: list[ManifestRow], labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    patients = [r.patient_id or f"__image{k}" for k, r in enumerate(rows)]
    _, groups = np.unique(patients, return_inverse=True)  # integers only: patient ids are not kept
    given = [r.split for r in rows]
    if not any(given):
        return groups, patient_split(labels, groups, seed=seed)
    missing = next((r for r in rows if not r.split), None)
    if missing:
        raise BadInputError(
            f"row {missing.line}: no split, while other rows have one; give every row a split or none."
        )
    splits = np.array(given)
    check_no_patient_leak(splits, groups, [r.line for r in rows])
    if "test" not in splits:
        raise BadInputError("the split column has no 'test' rows: medsight needs a test set to report on.")
    if "val" not in splits:  # carve a patient-level validation set from train
        train = np.flatnonzero(splits == "train")
        splits[train[hold_out(labels[train], groups[train], 0.125, seed)]] = "val"
    return groups, splits
