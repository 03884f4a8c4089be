"""The ``mitdb-pvc`` data set: MIT-BIH beats, PVC vs other, split by record (inter-patient).

Beats of one patient look alike, so a split that puts beats of one record in training and in
test measures memory, not generalisation (de Chazal et al., *IEEE TBME* 2004). Here every record
goes to exactly one split. With a dozen records the split is stratified by PVC burden: records
are ranked by their share of PVC beats and dealt, four at a time, two to training, one to
validation and one to test, in a seeded order. Which records went where is printed in the data
set's ``source`` (``medsight data info mitdb-pvc``) and recorded in ``extra["ecg"]``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from medsight.data.dataset import SPLITS, ImageDataset, Split
from medsight.data.ecg import BeatSettings, RecordBeats, beat_inputs, record_beats
from medsight.errors import BadInputError, DataNotFoundError
from medsight.io.ecg import EcgHeader, open_ecg
from medsight.paths import cache_dir
from medsight.progress import progress_bar

Log = Callable[[str], None]
NAME = "mitdb-pvc"
CLASSES = ["other", "pvc"]
SPLIT_SEED = 0
BEATS_VERSION = 1  # bump when record_beats changes: cached beats of older versions are then ignored
STRATUM = 4  # records per burden stratum: 2 train, 1 validation, 1 test
LICENCE = "ODC-By 1.0"
CITATION = (
    "MIT-BIH Arrhythmia Database (Moody & Mark, IEEE Eng Med Biol 2001), PhysioNet (Goldberger et al., "
    "Circulation 2000)"
)


def record_files(folder: Path) -> list[Path]:
    """ECG records in ``folder``: ``*.npz`` files, and WFDB records (``*.hea``) without an npz twin."""
    npz = sorted(folder.glob("*.npz"))
    seen = {p.stem for p in npz}
    wfdb = [p.with_suffix("") for p in sorted(folder.glob("*.hea")) if p.stem not in seen]
    return npz + wfdb


def inter_patient_split(burden: dict[str, float], seed: int = SPLIT_SEED) -> dict[str, list[str]]:
    """Records → split, stratified by PVC burden; no record in two splits.

    Records ranked by burden are taken four at a time; in each group a seeded shuffle gives one
    to validation, one to test and the rest to training (a last group of one or two goes to
    training). Needs at least three records.
    """
    if len(burden) < 3:
        raise BadInputError(
            f"{len(burden)} ECG record(s): an inter-patient split needs at least 3 (train, validation, "
            "test each get whole records). Add records to the folder."
        )
    rng = np.random.default_rng(seed)
    ranked = sorted(burden, key=lambda name: (burden[name], name))
    splits: dict[str, list[str]] = {name: [] for name in SPLITS}
    for first in range(0, len(ranked), STRATUM):
        group = ranked[first : first + STRATUM]
        slots = ["val", "test"] + ["train"] * (len(group) - 2) if len(group) >= 3 else ["train"] * len(group)
        for record, split in zip(group, rng.permutation(slots), strict=True):
            splits[str(split)].append(record)
    return {name: sorted(records) for name, records in splits.items()}


def cached_record_beats(header: EcgHeader, settings: BeatSettings, log: Log = print) -> RecordBeats:
    """``record_beats``, kept in MEDSIGHT_HOME's cache: every later step (evaluate, explain) reads it back.

    The key covers the file (path, size, modification time), the settings and the algorithm's version.
    """
    files = (
        [header.path]
        if header.kind == "npz"
        else [header.path.with_suffix(s) for s in (".hea", ".dat", ".atr")]
    )
    stats = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.exists()]
    key = json.dumps([BEATS_VERSION, stats, settings.as_dict()], sort_keys=True)
    path = cache_dir() / "ecg-beats" / f"{header.name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    if path.is_file():
        with np.load(path) as saved:
            return RecordBeats(
                header.name,
                *(saved[k] for k in ("windows", "samples", "is_pvc", "rr")),
                int(saved["dropped"]),
            )
    beats = record_beats(header, settings, log=log)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(
        tmp,
        windows=beats.windows,
        samples=beats.samples,
        is_pvc=beats.is_pvc,
        rr=beats.rr,
        dropped=beats.dropped,
    )
    os.replace(tmp, path)  # whole or absent: a reader never sees half a file
    return beats


def _split_arrays(beats: list[RecordBeats], settings: BeatSettings) -> Split:
    inputs = [beat_inputs(b, settings) for b in beats]
    return Split(
        np.concatenate(inputs),
        np.concatenate([b.is_pvc for b in beats]).astype(np.int64),
        np.concatenate([np.full(len(b), b.name) for b in beats]),
    )


def describe_split(folder: Path, records: dict[str, list[str]], seed: int | None) -> str:
    """``seed``: the drawn split's seed; None for a split given record by record."""
    listed = "; ".join(f"{name} {', '.join(records[name])}" for name in SPLITS)
    how = f"seed {seed}" if seed is not None else "records given"
    return f"{folder} (inter-patient split by record, {how}: {listed})"


def check_record_split(records: dict[str, list[str]], known: set[str], folder: Path) -> None:
    """Each of train, val and test names records of ``folder``, and none is in two (inter-patient).

    Checked before any beat is cut, so a typo fails at once rather than after minutes of work."""
    missing = [split for split in SPLITS if not records.get(split)]
    if missing:
        raise BadInputError(
            f"the record split names no records for {', '.join(missing)}: give records for each split "
            "(medsight data import: --train-records, --val-records and --test-records together), or none for "
            "a drawn split."
        )
    seen: dict[str, str] = {}
    for split in SPLITS:
        for record in records[split]:
            if record in seen:
                raise BadInputError(
                    f"record {record} is in both {seen[record]} and {split}: an inter-patient split keeps "
                    "each record (patient) in one split only."
                )
            seen[record] = split
    if unknown := sorted(set(seen) - known):
        raise BadInputError(
            f"the record split names records that are not in {folder} (unknown: {', '.join(unknown)}); "
            f"it holds {', '.join(sorted(known))}."
        )


def load_ecg_beats(
    folder: Path,
    name: str = NAME,
    *,
    settings: BeatSettings = BeatSettings(),
    records: dict[str, list[str]] | None = None,
    seed: int = SPLIT_SEED,
    log: Log = print,
) -> ImageDataset:
    """Every record in ``folder`` cut into beats and split by record; ``records`` fixes the split."""
    files = record_files(folder)
    if not files:
        raise DataNotFoundError(
            f"{folder}: no ECG records (*.npz or WFDB *.hea/*.dat/*.atr). Put the MIT-BIH records there "
            "(PhysioNet, mitdb), or set MEDSIGHT_DATA to the folder that holds ecg/mitdb."
        )
    headers = [open_ecg(path) for path in files]
    if records:
        check_record_split(records, {h.name for h in headers}, folder)
    beats = {
        h.name: cached_record_beats(h, settings, log=log)
        for h in progress_bar(headers, f"cutting beats of {len(headers)} ECG records")
    }
    burden = {r: float(b.is_pvc.mean()) if len(b) else 0.0 for r, b in beats.items()}
    drawn = not records
    records = records or inter_patient_split(burden, seed)
    splits = {s: _split_arrays([beats[r] for r in records[s]], settings) for s in SPLITS}
    return ImageDataset(
        name=name,
        classes=list(CLASSES),
        spatial_dims=1,
        modality="ecg",
        splits=splits,
        source=describe_split(folder, records, seed if drawn else None),
        licence=LICENCE,
        citation=CITATION,
        extra={
            "ecg": {
                "settings": settings.as_dict(),
                "channels": list(settings.channels),
                "records": records,
                "record_paths": {h.name: str(h.path) for h in headers},
                "pvc_burden": burden,
                "dropped_beats": {r: b.dropped for r, b in beats.items()},
                "beat_samples": {s: np.concatenate([beats[r].samples for r in records[s]]) for s in SPLITS},
            }
        },
    )


def ecg_records_in(folder: Path) -> Sequence[Path]:
    """For ``medsight data list``: the folder's records (empty when the folder is absent)."""
    return record_files(folder) if folder.is_dir() else []
