"""The geometry of a stack of DICOM slices, and how it is made into a regular grid.

Every slice says where it is: ``ImagePositionPatient`` (the centre of its first pixel, LPS mm) and
``ImageOrientationPatient`` (the unit directions ``r`` of its rows and ``c`` of its columns). The
slice normal is ``n = r x c``; a slice's place in the stack is its distance along it, ``P . n``.

Two things a scanner may do that one NIfTI/ITK affine cannot describe (and that a plain stack of
the pixel arrays silently gets wrong):

- **Gantry tilt** (CT): the table moves along the scanner's z axis while the image planes are tilted,
  so each slice is also shifted *within* its plane relative to the previous one. The offsets form a
  shear; the tilt angle is the angle between the line through the slice positions and the normal.
- **Uneven spacing**: the distances between neighbouring slices differ (e.g. 4 mm slices through the
  skull base, 7 mm above), so no single slice spacing is right.

``regrid`` corrects both the way dcm2niix does: each slice is shifted in its plane back onto the first
slice's grid (linear interpolation; pixels that come from outside the scanned field are filled with
the stack's lowest value, i.e. air), and, when the spacing is uneven, new slices are interpolated
linearly between the two acquired slices around them, at the smallest acquired spacing but never more
than twice as many slices as were acquired. The result has an orthogonal grid whose first slice is the
first acquired slice and whose last slice lies on the last acquired one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ORIENTATION_TOLERANCE = 1e-3  # per direction cosine: ~0.06 degrees
TILT_PIXELS = 0.1  # in-plane drift of the last slice, in pixels, from which a stack counts as tilted
GAP_FACTOR = 1.8  # a gap this many times its neighbours' (and the median) means missing slices


@dataclass
class SlicePlace:
    """Where one slice is: position and directions in LPS mm, pixel spacing (rows, columns)."""

    position: np.ndarray
    row_direction: np.ndarray  # r: the direction in which the column index grows
    column_direction: np.ndarray  # c: the direction in which the row index grows
    spacing: tuple[float, float]  # DICOM PixelSpacing order: between rows, between columns

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_direction, self.column_direction)


@dataclass
class StackGeometry:
    """A sorted stack's measured geometry: distances along the normal, in-plane drift, gaps."""

    first: SlicePlace
    distances: np.ndarray  # (n,) mm along the normal from the first slice, ascending
    drift: np.ndarray  # (n, 2) in-plane offset of each slice from the first, in pixels (rows, columns)

    @property
    def gaps(self) -> np.ndarray:
        return np.diff(self.distances)

    @property
    def tilt_degrees(self) -> float:
        """Angle between the line through the slice positions and the slice normal (0 without tilt)."""
        rows, cols = self.first.spacing
        shift = self.drift[-1] * np.array([rows, cols])
        return math.degrees(math.atan2(float(np.linalg.norm(shift)), float(self.distances[-1])))

    @property
    def tilted(self) -> bool:
        return len(self.distances) > 1 and float(np.abs(self.drift).max()) > TILT_PIXELS

    @property
    def uneven(self) -> bool:
        gaps = self.gaps
        if len(gaps) < 2:
            return False
        median = float(np.median(gaps))
        return float(np.abs(gaps - median).max()) > min(0.2, 0.05 * median)

    def missing_gaps(self) -> list[int]:
        """Indices k of gaps (slice k to k+1) much larger than their neighbours and the median."""
        gaps = self.gaps
        median = float(np.median(gaps)) if len(gaps) else 0.0
        found = []
        for k, gap in enumerate(gaps):
            neighbours = gaps[max(0, k - 1) : k].tolist() + gaps[k + 1 : k + 2].tolist()
            if neighbours and gap > GAP_FACTOR * max(neighbours) and gap > GAP_FACTOR * median:
                found.append(k)
        return found


def measure(places: list[SlicePlace]) -> StackGeometry:
    """The geometry of slices already sorted by their distance along the first slice's normal."""
    first = places[0]
    normal = first.normal
    offsets = np.array([p.position - first.position for p in places])
    distances = offsets @ normal
    in_plane = offsets - distances[:, None] * normal
    rows, cols = first.spacing
    drift = np.stack([in_plane @ first.column_direction / rows, in_plane @ first.row_direction / cols], 1)
    return StackGeometry(first, distances, drift)


def same_orientation(a: SlicePlace, b: SlicePlace) -> bool:
    return bool(
        np.allclose(a.row_direction, b.row_direction, atol=ORIENTATION_TOLERANCE)
        and np.allclose(a.column_direction, b.column_direction, atol=ORIENTATION_TOLERANCE)
    )


def target_distances(geometry: StackGeometry) -> np.ndarray:
    """Where the output slices go: the acquired ones when evenly spaced, else an even grid (dcm2niix)."""
    distances = geometry.distances
    if not geometry.uneven and not geometry.missing_gaps():
        return distances
    count = len(distances)
    total = float(distances[-1])
    smallest = float(geometry.gaps.min())
    slices = min(2 * count, int(round(total / smallest)) + 1)  # dcm2niix caps at twice the slices
    return np.linspace(0.0, total, max(slices, 2))


def regrid(stack: np.ndarray, geometry: StackGeometry, targets: np.ndarray) -> np.ndarray:
    """(n, rows, cols) acquired slices -> (len(targets), rows, cols) on the first slice's in-plane grid."""
    from scipy.ndimage import shift

    from medsight.io.volume import sample_axis

    fill = float(stack.min())
    if geometry.tilted:
        stack = np.stack(
            [
                shift(plane, tuple(drift), order=1, mode="constant", cval=fill)
                for plane, drift in zip(stack, geometry.drift, strict=True)
            ]
        ).astype(np.float32)
    if len(targets) == len(geometry.distances) and np.allclose(targets, geometry.distances, atol=1e-6):
        return stack
    fractional = np.interp(targets, geometry.distances, np.arange(len(geometry.distances)))
    return sample_axis(stack, fractional, axis=0)


def lps_affine(geometry: StackGeometry, targets: np.ndarray) -> np.ndarray:
    """4x4 voxel (x=column, y=row, z=slice) -> LPS mm of the regular grid ``targets`` describes."""
    first = geometry.first
    rows, cols = first.spacing
    step = float(targets[-1] - targets[0]) / (len(targets) - 1) if len(targets) > 1 else 1.0
    affine = np.eye(4)
    affine[:3, 0] = first.row_direction * cols
    affine[:3, 1] = first.column_direction * rows
    affine[:3, 2] = first.normal * step
    affine[:3, 3] = first.position
    return affine
