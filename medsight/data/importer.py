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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from monai.transforms import Resize

from medsight.data.manifest import ManifestRow, read_csv_manifest, read_folder_manifest
from medsight.data.npz import load_npz_dataset
from medsight.data.splits import check_no_patient_leak, hold_out, patient_split
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
) -> ImportReport:
    """Check and register ``source``; writes ``registry_dir/NAME`` whole or not at all."""
    check_dataset_name(name)
    source = source.expanduser().resolve()
    if not source.exists():
        raise BadInputError(f"{source}: no such file or folder.")
    final = registry_dir / name
    registry_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=registry_dir))
    try:
        if source.suffix.lower() == ".npz":
            report = _import_npz(source, staging, name, classes, modality)
        else:
            rows = read_csv_manifest(source) if source.is_file() else read_folder_manifest(source)
            report = _import_manifest(rows, staging, name, classes, size, modality, seed, skip_bad, source)
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
        report.folder = final
        return report
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
) -> ImportReport:
    classes = _check_labels(rows, classes, source)
    images, kept, problems, modalities = [], [], [], set()
    for row in progress_bar(rows, description=f"reading {len(rows)} images"):
        try:
            if not row.path.is_file():
                raise BadInputError(f"{row.path}: file not found.")
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
    np.savez(staging / "images.npz", images=array, labels=labels, splits=splits, groups=groups)
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
        },
    )
    return ImportReport(name, staging, len(kept), problems)


def _check_labels(rows: list[ManifestRow], classes: list[str] | None, source: Path) -> list[str]:
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
            f"{source}: every image has the label '{found[0]}'; a classifier needs two classes."
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
