"""``medsight convert``: a DICOM series (folder or zip) or a NIfTI file -> a regular NIfTI volume."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medsight.cli import app, say
from medsight.errors import BadInputError


def parse_spacing(text: str) -> tuple[float, float, float]:
    """'1' or '0.5,0.5,2' -> (x, y, z) millimetres."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise BadInputError(f"--spacing '{text}': give numbers in mm, e.g. 1 or 0.5,0.5,2 (x,y,z).") from None
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or min(values) <= 0:
        raise BadInputError(f"--spacing '{text}': give one or three positive numbers (x,y,z in mm).")
    return values[0], values[1], values[2]


def window_for(name: str) -> tuple[float, float]:
    """A named CT window (level, width), from the presets training uses."""
    from medsight.data.transforms import CT_WINDOWS

    if name not in CT_WINDOWS:
        raise BadInputError(f"--window '{name}': choose one of {', '.join(CT_WINDOWS)}.")
    return CT_WINDOWS[name]


@app.command()
def convert(
    source: Annotated[Path, typer.Argument(help="a DICOM series (folder or zip) or a NIfTI file")],
    out: Annotated[Path, typer.Option("--out", help="the NIfTI file to write (.nii.gz or .nii)")],
    spacing: Annotated[
        str | None, typer.Option(help="resample to this voxel size in mm: 1 or x,y,z (e.g. 0.5,0.5,2)")
    ] = None,
    window: Annotated[
        str | None, typer.Option(help="map a CT window onto 0..1: brain, subdural, bone, lung, ...")
    ] = None,
    series: Annotated[
        int | None, typer.Option(help="the series number, when the folder holds several")
    ] = None,
    volume: Annotated[
        int | None, typer.Option(help="of a 4D series (fMRI, cardiac), volume N (0-based)")
    ] = None,
    allow_gaps: Annotated[
        bool, typer.Option("--allow-gaps", help="interpolate across missing slices instead of refusing")
    ] = False,
) -> None:
    """Stack a DICOM series into one volume (sorted by position; gantry tilt and uneven spacing corrected)."""
    import logging

    from medsight.io.convert import convert as convert_volume

    logging.getLogger("medsight.io.series").setLevel(logging.ERROR)  # the corrections are printed below
    written = convert_volume(
        source,
        out,
        spacing=parse_spacing(spacing) if spacing else None,
        window_level_width=window_for(window) if window else None,
        series_number=series,
        volume_index=volume,
        allow_gaps=allow_gaps,
    )
    for note in written.corrections:
        say(f"correction: {note}")
    size = " x ".join(str(n) for n in written.shape_xyz)
    mm = " x ".join(f"{s:.3g}" for s in written.spacing)
    say(f"wrote {out}: {size} voxels of {mm} mm (x, y, z), RAS affine")
