"""DICOM series in folders, for ``medsight predict`` with a 3D model: each series read as one volume.

A folder is split by content. Single-frame DICOM images are grouped by Series Instance UID, and each
group is read as the API reads a stored series (``series.stack_series``: sorted along the slice normal,
rescaled, gantry tilt and uneven spacing corrected, RAS; gaps, mixed orientations and 4D refused), so
the same model gives the same answer whichever door the series came through. Everything else (a NIfTI
volume, a multi-frame DICOM, a file that is no image, a slice whose pixels cannot be decoded) goes on to
the per-file path, which predicts on it or refuses it in a row of its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom import Dataset

from medsight.predict.decode import Limits, sniff
from medsight.predict.errors import IncompatibleImageError
from medsight.predict.series import StoredSeries, check_voxels, first_instance, stack_series

HEAD_BYTES = 544  # enough for every format ``sniff`` tells apart


@dataclass
class FolderSeries:
    folder: Path
    uid: str  # the Series Instance UID
    headers: dict[Path, Dataset]  # each slice's file and header (read without its pixels)
    name: str  # the folder's name, with the series number when the folder holds several series


def input_files(paths: Iterable[Path]) -> list[Path]:
    """Files as given, and folders' files (recursively, hidden ones skipped), in a stable order."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(
                p for p in path.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.parts)
            )
        else:
            found.append(path)
    return found


def find_series(paths: list[Path], max_bytes: int) -> tuple[list[FolderSeries], list[Path]]:
    """The DICOM series in the folders among ``paths``, and every other file (for the per-file path)."""
    series: list[FolderSeries] = []
    others: list[Path] = []
    for path in paths:
        if not path.is_dir():
            others.append(path)
            continue
        groups: dict[str, dict[Path, Dataset]] = {}
        for file in input_files([path]):
            header = _slice_header(file, max_bytes)
            if header is None:
                others.append(file)
            else:
                groups.setdefault(str(header.get("SeriesInstanceUID", "")), {})[file] = header
        series += [
            FolderSeries(path, uid, headers, _name(path, headers, several=len(groups) > 1))
            for uid, headers in groups.items()
        ]
    return series, others


def _name(folder: Path, headers: dict[Path, Dataset], several: bool) -> str:
    number = next(iter(headers.values())).get("SeriesNumber")
    return f"{folder.name}-series{number if number not in (None, '') else '?'}" if several else folder.name


def _slice_header(path: Path, max_bytes: int) -> Dataset | None:
    """The header of a single-frame DICOM image within the byte limit; None for anything else."""
    if path.stat().st_size > max_bytes:  # the per-file path refuses it in its own words
        return None
    with path.open("rb") as handle:
        head = handle.read(HEAD_BYTES)
    try:
        if sniff(head, path.name) != "dicom":
            return None
        header = pydicom.dcmread(path, stop_before_pixels=True, force=head[128:132] != b"DICM")
    except Exception:  # noqa: BLE001 - not an image (ours), or a header pydicom cannot read (its many types)
        return None
    if "Rows" not in header or int(header.get("NumberOfFrames") or 1) > 1:  # no pixels, or a volume itself
        return None
    return header


def read_folder_series(series: FolderSeries, limits: Limits, unreadable: list[Path]) -> StoredSeries:
    """The series as one volume. A slice whose pixels cannot be decoded is added to ``unreadable`` (its
    own row says why) and left out, so the series is refused for the gap it leaves when it leaves one."""
    check_voxels(sum(int(h.Rows) * int(h.Columns) for h in series.headers.values()), limits)
    slices: dict[Path, Dataset] = {}
    for path in series.headers:
        try:
            dataset = pydicom.dcmread(path, force=True)
            dataset.pixel_array  # noqa: B018 - decoded once here (pydicom keeps it) to find a damaged slice
        except Exception:  # noqa: BLE001 - pydicom's and the codecs' many error types
            unreadable.append(path)
            continue
        slices[path] = dataset
    if not slices:
        raise IncompatibleImageError(f"{series.name}: no slice of the series could be decoded.")
    first = first_instance(list(slices.values()))
    header = next(series.headers[p] for p, d in slices.items() if d is first)
    return stack_series(list(slices.values()), header)
