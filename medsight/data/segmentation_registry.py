"""Segmentation data sets by name: the built-in DRIVE, and imported folders or manifests.

``drive`` is looked up under ``$MEDSIGHT_DATA/seg/drive`` (read-only, never copied). ``medsight data
import PATH --task segmentation`` checks every pair once and records where the files are in
``$MEDSIGHT_HOME/datasets/NAME/dataset.json`` (kind "segmentation"); the files are read from there
each time, so nothing is copied and the source is never modified.
"""

from __future__ import annotations

import json
from pathlib import Path

from medsight.data.importer import ImportReport, check_dataset_name, register_record
from medsight.data.segmentation import (
    SegmentationDataset,
    is_drive_layout,
    is_segmentation_manifest,
    read_drive,
    read_manifest,
)
from medsight.errors import BadInputError, DataNotFoundError
from medsight.paths import medsight_data, medsight_home
from medsight.progress import progress_bar

DRIVE = "drive"
DRIVE_FACTS = {
    "licence": "DRIVE: research use; do not redistribute (https://drive.grand-challenge.org)",
    "citation": "Staal et al., Ridge-based vessel segmentation in color images of the retina, IEEE TMI 2004",
}
BUILT_IN = {DRIVE: "DRIVE retinal vessels (Staal et al. 2004), 2D colour fundus, 565 × 584"}


def registry_dir() -> Path:
    return medsight_home() / "datasets"


def drive_candidates() -> list[Path]:
    """Where the DRIVE folder is looked for, in order."""
    data = medsight_data()
    return [data / "seg" / "drive", data / "drive"]


def looks_like_segmentation(path: Path) -> bool:
    """A DRIVE-style folder, or a CSV manifest with a ``mask`` column."""
    return is_drive_layout(path) or is_segmentation_manifest(path)


def _record(name: str) -> dict | None:
    record_file = registry_dir() / name / "dataset.json"
    if not record_file.exists():
        return None
    record = json.loads(record_file.read_text())
    return record if record.get("kind") == "segmentation" else None


def is_segmentation_dataset(name: str) -> bool:
    return name in BUILT_IN or _record(name) is not None


def built_in_location(name: str) -> Path | None:
    return next((p for p in drive_candidates() if is_drive_layout(p)), None) if name == DRIVE else None


def load_segmentation_dataset(name: str) -> SegmentationDataset:
    """Load a segmentation data set by name, or say where it was looked for and how to get it."""
    record = _record(name)
    if record is not None:
        return _read_source(Path(record["source"]), name, record.get("seed", 0), record.get("modality"))
    if name == DRIVE:
        found = built_in_location(name)
        if found is None:
            raise DataNotFoundError(
                f"data set 'drive' not found; looked in: {', '.join(str(p) for p in drive_candidates())}. "
                "DRIVE cannot be downloaded automatically (its licence asks for registration): get it from "
                "https://drive.grand-challenge.org, unpack it so that seg/drive/training/images exists under "
                "MEDSIGHT_DATA, or import the folder with `medsight data import PATH --task segmentation`."
            )
        return read_drive(found, DRIVE, **DRIVE_FACTS)
    raise DataNotFoundError(
        f"no segmentation data set named '{name}'. Built in: {', '.join(BUILT_IN)}. Register your own with "
        "`medsight data import PATH --task segmentation` (a DRIVE-style folder or a CSV manifest "
        "image,mask[,roi][,patient_id][,split])."
    )


def _read_source(source: Path, name: str, seed: int, modality: str | None) -> SegmentationDataset:
    if not source.exists():
        raise DataNotFoundError(
            f"data set '{name}' was imported from {source}, which is no longer there. "
            "Put the files back or import it again."
        )
    if is_drive_layout(source):
        return read_drive(source, name, seed)
    bar = lambda rows: progress_bar(rows, description=f"reading {name}")  # noqa: E731
    return read_manifest(source, name, seed, modality or "unknown", progress=bar)


def import_segmentation(
    source: Path, *, name: str, modality: str | None = None, seed: int = 0
) -> ImportReport:
    """Check every image/mask pair of ``source`` and register it; writes the record whole or not at all."""
    check_dataset_name(name)
    source = source.expanduser().resolve()
    if not source.exists():
        raise BadInputError(f"{source}: no such file or folder.")
    if not looks_like_segmentation(source):
        raise BadInputError(
            f"{source}: not a segmentation data set. Give a folder in DRIVE's layout "
            "(training/images, training/1st_manual[, training/mask], test/...) or a CSV manifest "
            "with the header image,mask[,roi][,patient_id][,split]."
        )
    dataset = _read_source(source, name, seed, modality)  # reads and checks every pair
    record = {
        "name": name,
        "kind": "segmentation",
        "source": str(source),
        "modality": modality or dataset.modality,
        "spatial_dims": dataset.spatial_dims,
        "channels": dataset.channels,
        "seed": seed,
        "splits": {split: part.names for split, part in dataset.splits.items()},
    }
    final = register_record(registry_dir(), record)
    return ImportReport(name, final, sum(len(s) for s in dataset.splits.values()))
