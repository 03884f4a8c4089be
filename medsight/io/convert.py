"""``medsight convert``'s work: a DICOM series or a NIfTI file -> a regular volume -> a NIfTI file."""

from __future__ import annotations

from pathlib import Path

from medsight.errors import BadInputError
from medsight.io.images import sniff_format
from medsight.io.nifti import read_nifti, write_nifti
from medsight.io.series import read_series
from medsight.io.volume import Volume, resample, window


def read_volume(
    source: str | Path,
    *,
    series_number: int | None = None,
    volume_index: int | None = None,
    allow_gaps: bool = False,
) -> Volume:
    """A NIfTI file (by content) as it is; anything else (folder, zip, DICOM files) as one DICOM series."""
    path = Path(source)
    if path.is_file():
        with open(path, "rb") as handle:
            head = handle.read(544)
        if sniff_format(head) == "nifti":
            return read_nifti(path, volume_index)
    if not path.exists():
        raise BadInputError(f"{path}: no such file or folder.")
    return read_series(path, series_number=series_number, volume_index=volume_index, allow_gaps=allow_gaps)


def convert(
    source: str | Path,
    out: str | Path,
    *,
    spacing: tuple[float, float, float] | None = None,
    window_level_width: tuple[float, float] | None = None,
    series_number: int | None = None,
    volume_index: int | None = None,
    allow_gaps: bool = False,
) -> Volume:
    """Read ``source``, resample to ``spacing`` (x, y, z mm) and window if asked, write ``out`` (.nii[.gz])."""
    if not (str(out).endswith(".nii") or str(out).endswith(".nii.gz")):
        raise BadInputError(f"{out}: the output is a NIfTI file; give it a name ending in .nii.gz or .nii.")
    volume = read_volume(
        source, series_number=series_number, volume_index=volume_index, allow_gaps=allow_gaps
    )
    if spacing is not None:
        volume = resample(volume, spacing)
    if window_level_width is not None:
        volume = window(volume, *window_level_width)
    write_nifti(volume, out)
    return volume
