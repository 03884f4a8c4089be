"""Find data sets by name: the MedMNIST collection, the built-in synthetic set, and imported ones."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from medsight.data.catalogue import CITATION, MEDMNIST
from medsight.data.dataset import SPLITS, ImageDataset, Split
from medsight.data.ecg_dataset import NAME as ECG_PVC
from medsight.data.ecg_dataset import ecg_records_in, load_ecg_beats
from medsight.data.ecg_registry import KIND as ECG_KIND
from medsight.data.ecg_registry import load_imported_ecg
from medsight.data.ecg_rr import NAME as ECG_PVC_RR
from medsight.data.ecg_rr import ecg_rr_dataset
from medsight.data.npz import load_npz_dataset, read_npz_arrays
from medsight.data.segmentation_registry import BUILT_IN as SEGMENTATION_BUILT_IN
from medsight.data.segmentation_registry import built_in_location as segmentation_location
from medsight.data.segmentation_registry import is_segmentation_dataset
from medsight.data.synthetic import synthetic_lesions
from medsight.data.tabular import TabularSpec
from medsight.errors import BadInputError, DataNotFoundError
from medsight.paths import downloads_dir, medsight_data, medsight_home

SYNTHETIC = "synthetic"


@dataclass
class DatasetEntry:
    name: str
    kind: str
    location: Path | None
    description: str

    @property
    def available(self) -> bool:
        return self.kind == SYNTHETIC or (self.location is not None and self.location.exists())


def registry_dir() -> Path:
    return medsight_home() / "datasets"


def medmnist_candidates(name: str) -> list[Path]:
    """Where a MedMNIST file is looked for, in order."""
    data = medsight_data()
    return [data / "medmnist" / f"{name}.npz", data / f"{name}.npz", downloads_dir() / f"{name}.npz"]


def ecg_pvc_folder() -> Path:
    """Where the MIT-BIH records of ``mitdb-pvc`` are looked for."""
    return medsight_data() / "ecg" / "mitdb"


def list_datasets() -> list[DatasetEntry]:
    entries = []
    for name, entry in MEDMNIST.items():
        found = next((p for p in medmnist_candidates(name) if p.exists()), None)
        kind = f"MedMNIST {entry.spatial_dims}D, {entry.modality}"
        entries.append(DatasetEntry(name, "medmnist", found, kind))
    ecg_folder = ecg_pvc_folder()
    ecg_found = ecg_folder if ecg_records_in(ecg_folder) else None
    entries.append(DatasetEntry(ECG_PVC, "ecg", ecg_found, "MIT-BIH beats (1D ECG), PVC vs other, by record"))
    entries.append(DatasetEntry(ECG_PVC_RR, "ecg", ecg_found, "mitdb-pvc + RR intervals as tabular data"))
    for name, description in SEGMENTATION_BUILT_IN.items():
        entries.append(DatasetEntry(name, "segmentation", segmentation_location(name), description))
    entries.append(DatasetEntry(SYNTHETIC, SYNTHETIC, None, "built-in lesion phantoms (offline demo)"))
    folder = registry_dir()
    for record_file in sorted(folder.glob("*/dataset.json")) if folder.exists() else []:
        record = json.loads(record_file.read_text())
        referenced = record["kind"] in ("npz", "segmentation", ECG_KIND)  # files stay where they are
        location = Path(record["source"]) if referenced else record_file.parent / "images.npz"
        entries.append(
            DatasetEntry(
                record["name"], f"imported {record['kind']}", location, f"imported from {record['source']}"
            )
        )
    return entries


def load_dataset(name: str) -> ImageDataset:
    """Load a data set by name, or say where it was looked for and how to get it."""
    if name == SYNTHETIC:
        return synthetic_lesions()
    if is_segmentation_dataset(name):
        raise BadInputError(
            f"'{name}' is a segmentation data set (images with masks); only segmentation steps read it "
            "(`medsight train --task segmentation`)."
        )
    record_file = registry_dir() / name / "dataset.json"
    if record_file.exists():
        return _load_imported(json.loads(record_file.read_text()), record_file.parent)
    if name in (ECG_PVC, ECG_PVC_RR):
        folder = ecg_pvc_folder()
        if not ecg_records_in(folder):
            raise DataNotFoundError(
                f"data set '{name}' not found: no ECG records in {folder}. Put the MIT-BIH Arrhythmia "
                "records there (WFDB .hea/.dat/.atr from PhysioNet, or .npz copies), or set MEDSIGHT_DATA "
                "to the folder that holds ecg/mitdb."
            )
        beats = load_ecg_beats(folder, ECG_PVC)
        return beats if name == ECG_PVC else ecg_rr_dataset(beats)
    if name in MEDMNIST:
        entry = MEDMNIST[name]
        candidates = medmnist_candidates(name)
        found = next((p for p in candidates if p.exists()), None)
        if found is None:
            raise DataNotFoundError(
                f"data set '{name}' not found; looked in: {', '.join(str(p) for p in candidates)}. "
                f"Get it with `medsight data pull {name}`, or set MEDSIGHT_DATA to the folder that holds "
                f"medmnist/{name}.npz."
            )
        if entry.task != "classification":
            raise BadInputError(
                f"'{name}' is a {entry.task} data set; medsight trains single-label classifiers."
            )
        return load_npz_dataset(
            found,
            name,
            classes=list(entry.classes),
            spatial_dims=entry.spatial_dims,
            modality=entry.modality,
            licence=entry.licence,
            citation=CITATION,
        )
    known = ", ".join(e.name for e in list_datasets())
    raise DataNotFoundError(
        f"no data set named '{name}'. Known names: {known}. Register your own with `medsight data import PATH`."
    )


def _load_imported(record: dict, folder: Path) -> ImageDataset:
    if record["kind"] == ECG_KIND:
        return load_imported_ecg(record)
    if record["kind"] == "npz":
        source = Path(record["source"])
        if not source.exists():
            raise DataNotFoundError(
                f"data set '{record['name']}' was imported from {source}, which is no longer there. "
                "Put the file back or import it again."
            )
        return load_npz_dataset(
            source,
            record["name"],
            classes=record["classes"],
            spatial_dims=record["spatial_dims"],
            modality=record["modality"],
        )
    arrays = read_npz_arrays(folder / "images.npz")
    tabular = arrays.get("tabular")  # imported with --tabular: features fitted on the training split
    splits = {}
    for split in SPLITS:
        pick = arrays["splits"] == split
        splits[split] = Split(
            arrays["images"][pick],
            arrays["labels"][pick],
            arrays["groups"][pick],
            None if tabular is None else tabular[pick],
        )
    if any(len(s) == 0 for s in splits.values()):
        raise BadInputError(
            f"data set '{record['name']}': a split is empty; import it again with more images."
        )
    return ImageDataset(
        record["name"],
        record["classes"],
        record["spatial_dims"],
        record["modality"],
        splits,
        source=record["source"],
        tabular_spec=TabularSpec(**record["tabular"]) if record.get("tabular") else None,
        heads=record.get("heads"),
    )


def remove_dataset(name: str) -> None:
    import shutil

    folder = registry_dir() / name
    if not (folder / "dataset.json").exists():
        raise DataNotFoundError(f"no imported data set named '{name}'.")
    shutil.rmtree(folder)
