"""A DICOM series (a folder, a zip, a list of files or of datasets) -> one ``Volume``.

The road, and what is refused on it (a user's error is a BadInputError saying what to do; a fix that
changes voxels is made only when it is sure, and then logged and listed in ``volume.corrections``):

1. read the files (non-DICOM files and objects without pixels are skipped, and counted);
2. group by Series Instance UID - several series: refused, unless one is chosen by its number;
3. check that every slice has the same size, pixel spacing and orientation (mixed orientations, e.g.
   a localizer's three planes in one series, are refused);
4. sort by the distance along the slice normal (``ImagePositionPatient . (r x c)``), never by file
   name or instance number;
5. several images at each position (a 4D series: an fMRI run, cardiac phases): refused, unless one
   volume is chosen; they are ordered by temporal position, trigger time, acquisition and instance;
6. a gap much larger than its neighbours' means missing slices: refused (``allow_gaps`` interpolates
   across it instead, logged);
7. rescale slope and intercept applied per slice (stored values -> Hounsfield units for CT);
8. gantry tilt and uneven spacing corrected onto a regular grid (see ``stack``), logged;
9. the affine converted from DICOM's LPS to the volume's RAS.

Messages name slices by their position in the sorted stack and their instance number, never by a
file name or a header value that could identify a patient.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from pydicom import Dataset

from medsight.errors import BadInputError
from medsight.io.dicom_files import Source, load_datasets
from medsight.io.stack import (
    SlicePlace,
    StackGeometry,
    lps_affine,
    measure,
    regrid,
    same_orientation,
    target_distances,
)
from medsight.io.volume import LPS_TO_RAS, Volume

log = logging.getLogger(__name__)


def read_series(
    source: Source,
    *,
    series_number: int | None = None,
    volume_index: int | None = None,
    allow_gaps: bool = False,
) -> Volume:
    """The volume of the one DICOM series in ``source`` (a folder, a zip file, files or datasets)."""
    datasets = load_datasets(source)
    return volume_from_datasets(
        datasets, series_number=series_number, volume_index=volume_index, allow_gaps=allow_gaps
    )


def group_series(datasets: Sequence[Dataset]) -> list[list[Dataset]]:
    """The datasets grouped by Series Instance UID, in order of first appearance."""
    groups: dict[str, list[Dataset]] = {}
    for dataset in datasets:
        groups.setdefault(str(dataset.get("SeriesInstanceUID", "")), []).append(dataset)
    return list(groups.values())


def _describe(group: list[Dataset]) -> str:
    first = group[0]
    number = first.get("SeriesNumber")
    return f"series number {number if number not in (None, '') else '?'}: {len(group)} {first.get('Modality', '')} images"


def choose_series(datasets: Sequence[Dataset], series_number: int | None) -> list[Dataset]:
    groups = group_series(datasets)
    if series_number is not None:
        groups = [g for g in groups if _int(g[0], "SeriesNumber") == series_number]
        if not groups:
            raise BadInputError(f"no series with series number {series_number} among the images given.")
    if len(groups) > 1:
        found = "; ".join(_describe(g) for g in groups)
        raise BadInputError(
            f"the images belong to {len(groups)} series ({found}); a volume is one series. "
            "Give the folder of one series (or, to make a volume file, `medsight convert --series N`)."
        )
    return groups[0]


def volume_from_datasets(
    datasets: Sequence[Dataset],
    *,
    series_number: int | None = None,
    volume_index: int | None = None,
    allow_gaps: bool = False,
) -> Volume:
    """One regular, RAS-oriented volume from the slices of one series (see the module's road)."""
    chosen = _deduplicated(choose_series(datasets, series_number))
    places = _check_slices(chosen)
    normal = places[0].normal
    ordered = sorted(zip(chosen, places, strict=True), key=lambda pair: float(pair[1].position @ normal))
    ordered = _one_volume(ordered, volume_index)
    chosen, places = [d for d, _ in ordered], [p for _, p in ordered]
    geometry = measure(places)
    corrections = _check_gaps(geometry, chosen, allow_gaps)
    stack = np.stack([rescaled_pixels(d) for d in chosen])
    targets = target_distances(geometry)
    corrections += _explain(geometry, chosen, targets)
    for note in corrections:
        log.warning("DICOM series -> volume: %s", note)
    array = regrid(stack, geometry, targets) if corrections else stack
    affine = lps_affine(geometry, targets)
    if len(chosen) == 1:
        affine[:3, 2] = places[0].normal * _slice_thickness(chosen[0])
    metadata = {
        "format": "dicom-series",
        "modality": str(chosen[0].get("Modality", "")) or None,
        "slices_acquired": len(chosen),
        "tilt_degrees": round(geometry.tilt_degrees, 3) if len(chosen) > 1 else 0.0,
        "corrections": corrections,
    }
    return Volume(array, LPS_TO_RAS @ affine, metadata)


def _int(dataset: Dataset, keyword: str) -> int | None:
    try:
        return int(dataset.get(keyword))
    except (TypeError, ValueError):
        return None


def _float(dataset: Dataset, keyword: str) -> float:
    try:
        return float(dataset.get(keyword))
    except (TypeError, ValueError):
        return 0.0


def _name(index: int, dataset: Dataset) -> str:
    number = _int(dataset, "InstanceNumber")
    return f"slice {index + 1}" + (f" (instance number {number})" if number is not None else "")


def _deduplicated(datasets: list[Dataset]) -> list[Dataset]:
    """The same instance sent twice is one slice, not a 4D series."""
    seen: dict[str, Dataset] = {}
    for dataset in datasets:
        seen.setdefault(str(dataset.get("SOPInstanceUID", id(dataset))), dataset)
    if len(seen) < len(datasets):
        log.info("ignored %d repeated copies of the same instances", len(datasets) - len(seen))
    return list(seen.values())


def _place(index: int, dataset: Dataset) -> SlicePlace:
    if int(dataset.get("NumberOfFrames", 1) or 1) > 1:
        raise BadInputError(
            f"{_name(index, dataset)} is a multi-frame object; read it alone as one image, "
            "a series of multi-frame objects is not stacked."
        )
    try:
        position = np.array([float(v) for v in dataset.ImagePositionPatient], dtype=np.float64)
        cosines = np.array([float(v) for v in dataset.ImageOrientationPatient], dtype=np.float64)
        spacing = tuple(float(v) for v in dataset.PixelSpacing)
    except (AttributeError, TypeError, ValueError):
        raise BadInputError(
            f"{_name(index, dataset)} lacks ImagePositionPatient, ImageOrientationPatient or PixelSpacing: "
            "where it lies in the patient is unknown, so the slices cannot be stacked into a volume."
        ) from None
    if position.shape != (3,) or cosines.shape != (6,) or len(spacing) != 2 or min(spacing) <= 0:
        raise BadInputError(
            f"{_name(index, dataset)}: its position, orientation or pixel spacing is malformed."
        )
    row, column = cosines[:3], cosines[3:]
    if (
        abs(np.linalg.norm(row) - 1) > 0.01
        or abs(np.linalg.norm(column) - 1) > 0.01
        or abs(row @ column) > 0.01
    ):
        raise BadInputError(
            f"{_name(index, dataset)}: its ImageOrientationPatient is not two unit, perpendicular directions."
        )
    return SlicePlace(position, row / np.linalg.norm(row), column / np.linalg.norm(column), spacing)  # type: ignore[arg-type]


def _check_slices(datasets: list[Dataset]) -> list[SlicePlace]:
    """Every slice placed; refused when sizes, spacings or orientations differ within the series."""
    places = [_place(i, d) for i, d in enumerate(datasets)]
    sizes = {(int(d.Rows), int(d.Columns)) for d in datasets}
    if len(sizes) > 1:
        raise BadInputError(
            f"the series mixes image sizes ({', '.join(f'{r}x{c}' for r, c in sorted(sizes))}); "
            "a volume's slices all have one size. Send the images of one acquisition."
        )
    orientations: list[SlicePlace] = []
    for place in places:
        if not any(same_orientation(place, seen) for seen in orientations):
            orientations.append(place)
    if len(orientations) > 1:
        raise BadInputError(
            f"the series mixes {len(orientations)} slice orientations (e.g. a localizer's three planes, or "
            "a reformat); a volume has one. Send the slices of one orientation only."
        )
    if any(not np.allclose(p.spacing, places[0].spacing, rtol=1e-3) for p in places):
        raise BadInputError("the series mixes pixel spacings; a volume's slices all have one pixel size.")
    return places


def _temporal_key(dataset: Dataset) -> tuple[float, ...]:
    """Order of images at one position: temporal position, trigger time, acquisition, time, instance."""
    keywords = (
        "TemporalPositionIdentifier",
        "TriggerTime",
        "AcquisitionNumber",
        "AcquisitionTime",
        "InstanceNumber",
    )
    return tuple(_float(dataset, k) for k in keywords)


def _one_volume(
    ordered: list[tuple[Dataset, SlicePlace]], volume_index: int | None
) -> list[tuple[Dataset, SlicePlace]]:
    """The slices of one volume: all of them, or of a 4D series the ``volume_index``-th at each position."""
    normal = ordered[0][1].normal
    distances = np.array([p.position @ normal for _, p in ordered])
    gaps = np.diff(distances)
    step = float(np.median(gaps[gaps > 1e-3])) if np.any(gaps > 1e-3) else 1.0
    starts = np.flatnonzero(np.concatenate([[True], gaps > max(1e-3, 0.01 * step)]))
    groups = [
        sorted(g, key=lambda i: _temporal_key(ordered[i][0]))
        for g in np.split(np.arange(len(ordered)), starts[1:])
    ]
    counts = {len(g) for g in groups}
    if counts == {1}:
        if volume_index not in (None, 0):
            raise BadInputError(f"the series holds one volume; volume {volume_index} does not exist (use 0).")
        return ordered
    if len(counts) > 1:
        raise BadInputError(
            f"slice positions repeat unevenly ({len(ordered)} images at {len(groups)} positions, "
            f"{min(counts)} to {max(counts)} at each): images are missing, or two acquisitions are mixed. "
            "Send the complete series."
        )
    (repeats,) = counts
    if volume_index is None or not 0 <= volume_index < repeats:
        raise BadInputError(
            f"the series holds {repeats} volumes of {len(groups)} slices each (4D, e.g. an fMRI run or "
            f"cardiac phases); choose one with a volume index 0..{repeats - 1} (`medsight convert --volume N`)."
        )
    log.info("4D series: kept volume %d of %d", volume_index, repeats)
    return [ordered[g[volume_index]] for g in groups]


def _check_gaps(geometry: StackGeometry, datasets: list[Dataset], allow_gaps: bool) -> list[str]:
    missing = geometry.missing_gaps()
    if not missing:
        return []
    k = missing[0]
    gap, median = float(geometry.gaps[k]), float(np.median(geometry.gaps))
    where = f"between {_name(k, datasets[k])} and {_name(k + 1, datasets[k + 1])}"
    if not allow_gaps:
        raise BadInputError(
            f"the series has a gap of {gap:.2f} mm {where}, where slices are otherwise about {median:.2f} mm apart "
            f"({len(missing)} such gap(s)): slices are missing. Send the whole series, or interpolate across "
            "the gaps into a volume file with `medsight convert --allow-gaps`."
        )
    return [
        f"interpolated across {len(missing)} gap(s) of missing slices (the largest {geometry.gaps[missing].max():.2f} mm)"
    ]


def _explain(geometry: StackGeometry, datasets: list[Dataset], targets: np.ndarray) -> list[str]:
    """The corrections ``regrid`` will make, in words (an empty list: the stack is already regular)."""
    notes = []
    if geometry.tilted:
        header = datasets[0].get("GantryDetectorTilt")
        said = f"; the header says {float(header):g} degrees" if header not in (None, "") else ""
        notes.append(
            f"gantry tilt of {geometry.tilt_degrees:.2f} degrees (from the slice positions{said}) corrected: "
            "each slice shifted within its plane onto the first slice's grid"
        )
    if geometry.uneven:
        gaps = geometry.gaps
        step = float(targets[-1] - targets[0]) / max(1, len(targets) - 1)
        notes.append(
            f"uneven slice spacing ({gaps.min():.2f} to {gaps.max():.2f} mm) made even: {len(geometry.distances)} "
            f"slices resampled to {len(targets)} slices {step:.3f} mm apart (linear interpolation)"
        )
    return notes


def _slice_thickness(dataset: Dataset) -> float:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = _float(dataset, keyword)
        if value > 0:
            return value
    return 1.0


def rescaled_pixels(dataset: Dataset) -> np.ndarray:
    """The slice's pixels (rows, columns) in real-world units (rescale slope and intercept applied)."""
    from pydicom.pixels import apply_rescale

    try:
        pixels = dataset.pixel_array
    except Exception as err:  # the codec's own error types
        raise BadInputError(
            f"a slice's pixel data cannot be decoded ({type(err).__name__}); it may be truncated "
            "or use a compression no installed codec reads."
        ) from None
    if pixels.ndim != 2:
        raise BadInputError(f"a slice of shape {pixels.shape}: only single-frame grey slices are stacked.")
    return np.asarray(apply_rescale(pixels, dataset), dtype=np.float32)
