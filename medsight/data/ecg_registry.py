"""Folders of ECG records registered by name: ``medsight data import FOLDER`` on WFDB or npz records.

``mitdb-pvc`` reads ``$MEDSIGHT_DATA/ecg/mitdb`` and draws its own split. An imported folder is
any folder of records (your own PhysioNet download of all 48 MIT-BIH records, say), with a split
given record by record (e.g. de Chazal's DS1/DS2, with validation records taken from DS1) or drawn
as ``mitdb-pvc``'s is (stratified by PVC burden, seeded). ``$MEDSIGHT_HOME/datasets/NAME/dataset.json``
(kind "ecg") records the folder and which record went where, so that every later step (evaluate,
explain, optimize, serve) reads the same split; the records are read in place, never copied.
It also records how beats are cut where that differs from the default (``neighbour_beats``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from medsight.data.dataset import ImageDataset
from medsight.data.ecg import BeatSettings
from medsight.data.ecg_dataset import describe_split, load_ecg_beats, record_files
from medsight.data.importer import ImportReport, check_dataset_name, register_record
from medsight.errors import BadInputError, DataNotFoundError

KIND = "ecg"
MAX_NEIGHBOUR_BEATS = 64


def looks_like_ecg_folder(path: Path) -> bool:
    """A folder holding ECG records: ``*.npz`` copies or WFDB ``*.hea`` headers."""
    return path.is_dir() and bool(record_files(path))


def import_ecg(
    source: Path,
    registry: Path,
    *,
    name: str,
    records: dict[str, list[str]] | None = None,
    seed: int = 0,
    neighbour_beats: int = 0,
) -> ImportReport:
    """Cut every record's beats once (checking them), then register the folder and its split whole.

    ``neighbour_beats``: add the neighbour channels (``medsight.data.ecg``) over this many beats each side.
    """
    check_dataset_name(name)
    if not 0 <= neighbour_beats <= MAX_NEIGHBOUR_BEATS:
        raise BadInputError(
            f"neighbour beats {neighbour_beats}: give 0 (no neighbour channels) to {MAX_NEIGHBOUR_BEATS} "
            "beats each side (8 is about 13 s of a normal rhythm)."
        )
    source = source.expanduser().resolve()
    if not looks_like_ecg_folder(source):
        raise BadInputError(
            f"{source}: no ECG records here. Give a folder of WFDB records (*.hea with *.dat and *.atr) "
            "or MIT-BIH *.npz copies."
        )
    beat_settings = {"neighbour_beats": neighbour_beats} if neighbour_beats else {}
    settings = BeatSettings(**beat_settings)
    # refuses a split that mixes patients
    dataset = load_ecg_beats(source, name, settings=settings, records=records, seed=seed)
    chosen = dataset.extra["ecg"]["records"]
    unused = sorted({p.stem for p in record_files(source)} - {r for rs in chosen.values() for r in rs})
    record = {
        "name": name,
        "kind": KIND,
        "source": str(source),
        "seed": seed if records is None else None,  # None: the split was given record by record
        "records": chosen,  # kept, so that records added to the folder later never move a patient
        "beat_settings": beat_settings,  # only what differs from the defaults
    }
    final = register_record(registry, record)
    notes = [f"records in no split (not used): {', '.join(unused)}"] if unused else []
    return ImportReport(name, final, sum(len(s) for s in dataset.splits.values()), notes=notes)


def load_imported_ecg(record: dict) -> ImageDataset:
    source = Path(record["source"])
    if not looks_like_ecg_folder(source):
        raise DataNotFoundError(
            f"data set '{record['name']}' reads the ECG records in {source}, which are no longer there. "
            "Put them back or import the folder again."
        )
    settings = BeatSettings.from_dict(record.get("beat_settings", {}))
    dataset = load_ecg_beats(source, record["name"], settings=settings, records=record["records"])
    # the records are the user's: MIT-BIH's licence and citation hold only for MIT-BIH's own
    return replace(
        dataset,
        source=describe_split(source, record["records"], record["seed"]),
        licence=None,
        citation=None,
    )
