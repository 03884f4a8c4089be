"""A 3D segmentation model on a whole stored series: one volume in, a mask on the source slices out.

The series is read as the 3D classifiers read it (``series.read_stored_series``: sorted, rescaled, gantry
tilt and uneven spacing corrected, RAS), turned to the closest RAS orientation and resampled to the
voxel size the run learnt on (its ``spacing``, when its training images gave one), then segmented by the
run's sliding-window inference (``segmentation.segment_array``, as ``medsight predict`` does).

The probabilities are then sampled back at every pixel of every *acquired* slice, through the patient
coordinates (each slice's own position, orientation and pixel spacing): whatever the reading and
resampling did (tilt correction, regridding, flips), the inverse is one affine map, so the mask lies
on the source slices and becomes one multi-frame DICOM SEG over them. The volume in mL counts each
slice's mask over the slab it stands for (half-way to its neighbours), so uneven spacing is weighed
as acquired.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import numpy as np
from pydicom import Dataset
from scipy.ndimage import map_coordinates

from medsight.io.images import MedicalImage
from medsight.io.series import rescaled_pixels
from medsight.io.volume import LPS_TO_RAS, Volume, canonical, resample
from medsight.predict.conform import conform_layout
from medsight.predict.decode import Decoded, Limits
from medsight.predict.errors import IncompatibleImageError, TooManyPixelsError
from medsight.predict.loaded import LoadedModel
from medsight.predict.segmentation import overlay_png, segment_array
from medsight.predict.series import StoredSeries, along_normal
from medsight.predict.served_segmentation import SegmentationPrediction, finding, segmenter_of
from medsight.predict.timing import elapsed_ms

MIN_SIDE = 2  # voxels along every axis: a thinner volume is a picture, not something a 3D model reads


@dataclass
class SeriesSegmentation(SegmentationPrediction):
    """A mask over the acquired slices of a series (``mask``: slices x rows x columns, in ``slices``' order)."""

    slab_mm: list[float] = field(default_factory=list, repr=False)  # the thickness each slice stands for
    overlay_slice: int = 0  # the slice drawn in the overlay: the one with the most structure

    @property
    def area(self) -> float:
        """The volume in mm³: each slice's foreground pixels x pixel area x its slab."""
        assert self.spacing is not None  # a series' slices always give their pixel spacing
        per_slice = self.mask.reshape(len(self.mask), -1).sum(axis=1)
        return float(per_slice @ np.asarray(self.slab_mm) * self.spacing[0] * self.spacing[1])

    def summary(self) -> dict:
        return super().summary() | {"volume_ml": self.area / 1000, "overlay_slice": self.overlay_slice}


def model_grid(volume: Volume, spacing: list[float] | None, limits: Limits, name: str) -> Volume:
    """The volume in RAS orientation at the run's voxel size (``spacing`` per array axis, z y x)."""
    turned = canonical(volume)
    if spacing is not None and not np.allclose(turned.spacing[::-1], spacing, rtol=0.01):
        turned = resample(turned, tuple(spacing[::-1]))  # type: ignore[arg-type]
    if min(turned.array.shape) < MIN_SIDE:
        raise IncompatibleImageError(
            f"{name}: at the model's voxel size the series is {turned.array.shape} voxels, too thin for a 3D "
            "model; send a series that covers more slices."
        )
    if turned.array.size > limits.max_pixels:
        raise TooManyPixelsError(
            f"{name}: at the model's voxel size the series is {turned.array.size / 1e6:.0f} million voxels, "
            f"more than this server segments at once ({limits.max_pixels / 1e6:.0f} million)."
        )
    return turned


def onto_slices(values: np.ndarray, grid: Volume, slices: list[Dataset]) -> np.ndarray:
    """``values`` (on ``grid``'s voxels) sampled at every pixel of each slice: (slices, rows, columns).

    Linear between voxel centres; 0 where a slice's pixel lies outside the grid (e.g. the rows a gantry
    tilt moves past the first slice's footprint).
    """
    to_index = np.linalg.inv(grid.affine) @ LPS_TO_RAS  # LPS mm -> voxel (x, y, z) of the grid
    out = np.empty((len(slices), int(slices[0].Rows), int(slices[0].Columns)), dtype=np.float32)
    rows, columns = np.meshgrid(np.arange(out.shape[1]), np.arange(out.shape[2]), indexing="ij")
    for k, dataset in enumerate(slices):
        xyz = to_index[:3, :3] @ _pixel_lps(dataset, rows.ravel(), columns.ravel()) + to_index[:3, 3:]
        zyx = xyz[::-1]
        inside = np.all((zyx >= -0.5) & (zyx <= np.array(values.shape)[:, None] - 0.5), axis=0)
        sampled = map_coordinates(values, zyx, order=1, mode="nearest")
        out[k] = np.where(inside, sampled, 0.0).reshape(out.shape[1:])
    return out


def _pixel_lps(dataset: Dataset, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """(3, N) LPS millimetres of pixels (row, column) of one slice, from its own header."""
    position = np.array(dataset.ImagePositionPatient, dtype=np.float64)[:, None]
    cosines = np.array(dataset.ImageOrientationPatient, dtype=np.float64)
    row_mm, column_mm = (float(v) for v in dataset.PixelSpacing)
    return position + np.outer(cosines[:3], columns * column_mm) + np.outer(cosines[3:], rows * row_mm)


def slab_thickness(slices: list[Dataset]) -> list[float]:
    """The thickness (mm) each sorted slice stands for: half-way to each neighbour (one gap at the ends)."""
    if len(slices) == 1:
        return [float(slices[0].get("SliceThickness") or 1.0)]
    distances = np.array([along_normal(d) for d in slices])
    gaps = np.diff(distances)
    edges = np.concatenate([[gaps[0]], gaps, [gaps[-1]]])
    return [float(v) for v in (edges[:-1] + edges[1:]) / 2]


def segment_series(stored: StoredSeries, model: LoadedModel, limits: Limits) -> SeriesSegmentation:
    """Segment the stored series with a 3D segmentation model; the mask on its acquired slices."""
    segmenter = segmenter_of(model)
    start = time.perf_counter()
    grid = model_grid(stored.volume, segmenter.info.get("spacing"), limits, "the series")
    image = conform_layout(MedicalImage(grid.array[None]), segmenter.spec, "the series")
    preprocess_ms, start = elapsed_ms(start), time.perf_counter()
    result = segment_array(segmenter, image)
    probabilities = onto_slices(result.probabilities, grid, stored.slices)
    mask = (probabilities >= result.threshold).astype(np.uint8)
    inference_ms, start = elapsed_ms(start), time.perf_counter()
    shown = int(np.argmax(mask.reshape(len(mask), -1).sum(axis=1))) if mask.any() else len(mask) // 2
    overlay = overlay_png(rescaled_pixels(stored.slices[shown])[None], mask[shown])
    label, classes = finding(segmenter.info, mask)
    return SeriesSegmentation(
        label=label,
        classes=classes,
        threshold=result.threshold,
        model={"name": model.name, "version": model.version},
        shape=list(mask.shape),
        foreground_pixels=int(mask.sum()),
        spacing=tuple(float(v) for v in stored.slices[0].PixelSpacing),
        timing_ms={"preprocess": preprocess_ms, "inference": inference_ms, "explain": elapsed_ms(start)},
        mask=mask,
        pngs={"overlay": overlay},
        info=segmenter.info,
        source=Decoded(
            stored.volume.to_image(), "dicom-series", hashlib.sha256(grid.array.tobytes()).hexdigest()
        ),
        slab_mm=slab_thickness(stored.slices),
        overlay_slice=shown,
    )
