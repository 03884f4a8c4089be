"""Manifests: the list of (file, label, patient, split) rows behind a folder or CSV data set."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medsight.errors import BadInputError

SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".nii", ".gz"}


@dataclass
class ManifestRow:
    line: int  # 1-based line in the CSV (header is line 1), or the file's position in a folder
    path: Path
    label: str
    patient_id: str | None = None
    split: str | None = None
    extra: dict[str, str] = field(default_factory=dict)  # further declared columns: labels, tabular


def read_csv_manifest(
    csv_path: Path, labels: Sequence[str] = ("label",), tabular: Sequence[str] = ()
) -> list[ManifestRow]:
    """Rows of a CSV manifest ``path,label[,patient_id][,split]``; paths may be relative to the CSV.

    ``labels`` names the label column(s): with several, the first is ``row.label`` and the others
    are in ``row.extra``, as are the ``tabular`` columns (``medsight/data/tabular.py``).
    """
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            for needed in ("path", *labels, *tabular):
                if needed not in columns:
                    raise BadInputError(
                        f"{csv_path}: the header has no '{needed}' column (found: {', '.join(columns) or 'none'}). "
                        "A manifest's header is path,label[,patient_id][,split] plus any columns "
                        "declared as labels or tabular."
                    )
            rows = []
            for number, raw in enumerate(reader, start=2):
                record = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
                rows.append(_manifest_row(csv_path, number, record, labels, tabular))
    except UnicodeDecodeError as err:
        raise BadInputError(f"{csv_path}: not a UTF-8 text CSV file.") from err
    if not rows:
        raise BadInputError(f"{csv_path}: the manifest has a header but no rows.")
    return rows


def _manifest_row(
    csv_path: Path,
    number: int,
    record: dict[str, str],
    labels: Sequence[str] = ("label",),
    tabular: Sequence[str] = (),
) -> ManifestRow:
    if not record.get("path"):
        raise BadInputError(f"{csv_path}, row {number}: the 'path' is empty.")
    for label in labels:
        if not record.get(label):
            raise BadInputError(
                f"{csv_path}, row {number}: the '{label}' is empty; every image needs a label."
            )
    path = Path(record["path"]).expanduser()
    if not path.is_absolute():
        path = csv_path.parent / path
    split = record.get("split") or None
    if split is not None:
        if split.lower() not in SPLIT_ALIASES:
            raise BadInputError(f"{csv_path}, row {number}: split '{split}' is not one of train, val, test.")
        split = SPLIT_ALIASES[split.lower()]
    extra = {name: record.get(name) or "" for name in (*labels[1:], *tabular)}
    return ManifestRow(
        number, path.resolve(), record[labels[0]], record.get("patient_id") or None, split, extra
    )


def read_folder_manifest(folder: Path) -> list[ManifestRow]:
    """One sub-folder per class, image files inside (searched recursively)."""
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_dirs) < 2:
        raise BadInputError(
            f"{folder}: expected one sub-folder per class (at least two), found {len(class_dirs)}. "
            "Lay the images out as FOLDER/<class>/<image>, or give a CSV manifest instead."
        )
    rows = []
    for class_dir in class_dirs:
        files = sorted(
            p
            for p in class_dir.rglob("*")
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
        )
        rows += [ManifestRow(len(rows) + 1, f.resolve(), class_dir.name) for f in files]
    if not rows:
        raise BadInputError(f"{folder}: no PNG, JPEG, DICOM or NIfTI files in the class sub-folders.")
    return rows


def write_manifest(rows: list[ManifestRow], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "patient_id", "split"])
        for row in rows:
            writer.writerow([row.path, row.label, row.patient_id or "", row.split or ""])
