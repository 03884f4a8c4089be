"""DICOM images from a folder, a zip file, a list of files or of datasets, recognised by content.

Files that are not DICOM, and DICOM objects without pixels (reports, DICOMDIR), are skipped and counted;
a folder or zip is capped in files and unpacked bytes so that pointing at a whole archive fails fast.
"""

from __future__ import annotations

import io
import logging
import zipfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from pydicom import Dataset

from medsight.errors import BadInputError

log = logging.getLogger(__name__)
Source = str | Path | Sequence[str | Path] | Sequence[Dataset]
MAX_FILES = 10_000  # a series larger than this is almost certainly a whole archive
MAX_ZIP_BYTES = 4 * 2**30


def load_datasets(source: Source) -> list[Dataset]:
    """Every DICOM image in ``source``; other files are skipped. Refused when none is found."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
            datasets = _parse_all((str(p), p.read_bytes) for p in _capped(files, path))
        elif zipfile.is_zipfile(path):
            datasets = _from_zip(path)
        elif path.is_file():
            datasets = _parse_all([(str(path), path.read_bytes)])
        else:
            raise BadInputError(f"{path}: no such file or folder.")
        where = str(path)
    else:
        items = list(source)
        if items and all(isinstance(i, Dataset) for i in items):
            datasets = [i for i in items if "PixelData" in i]  # type: ignore[misc]
        else:
            paths = [Path(i) for i in items]  # type: ignore[arg-type]
            datasets = _parse_all((str(p), p.read_bytes) for p in paths)
        where = f"the {len(items)} inputs given"
    if not datasets:
        raise BadInputError(f"{where}: no DICOM images found (files without pixel data are skipped).")
    return datasets


def _capped(files: list[Path], where: Path) -> list[Path]:
    if len(files) > MAX_FILES:
        raise BadInputError(
            f"{where}: {len(files)} files is more than one series holds (limit {MAX_FILES}); "
            "point at the folder of one series."
        )
    return files


def _from_zip(path: Path) -> list[Dataset]:
    with zipfile.ZipFile(path) as archive:
        members = [
            m for m in archive.infolist() if not m.is_dir() and not m.filename.split("/")[-1].startswith(".")
        ]
        if len(members) > MAX_FILES:
            raise BadInputError(
                f"{path}: {len(members)} files is more than one series holds (limit {MAX_FILES})."
            )
        unpacked = sum(m.file_size for m in members)
        if unpacked > MAX_ZIP_BYTES:  # declared sizes, checked before anything is unpacked
            raise BadInputError(
                f"{path}: unpacks to {unpacked / 2**30:.1f} GiB, more than one series "
                f"(limit {MAX_ZIP_BYTES / 2**30:.0f} GiB)."
            )
        return _parse_all((m.filename, lambda m=m: archive.read(m)) for m in members)


def _parse_all(items: Iterable[tuple[str, Callable[[], bytes]]]) -> list[Dataset]:
    import pydicom

    datasets, skipped = [], 0
    for _name, read in items:
        data = read()
        # DICOM by content: the preamble's magic, or (without a preamble) a first group 0002 or 0008
        if data[128:132] != b"DICM" and data[:2] not in (b"\x02\x00", b"\x08\x00"):
            skipped += 1
            continue
        try:
            dataset = pydicom.dcmread(io.BytesIO(data), force=True)
        except Exception:  # pydicom's many error types for damaged files: counted, not fatal
            skipped += 1
            continue
        if "PixelData" in dataset:
            datasets.append(dataset)
        else:
            skipped += 1
    if skipped:
        log.info("skipped %d files that are not DICOM images (no pixel data, or not DICOM)", skipped)
    return datasets
