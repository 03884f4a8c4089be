"""Predictions on a whole stored DICOM series: its instances -> one volume -> a 3D model's input.

The series is read from the encrypted store instance by instance (each read audited, as any read is),
stacked by ``medsight.io.series`` (sorted by position; gantry tilt and uneven spacing corrected and
logged; 4D, mixed orientations or missing slices refused), turned to the closest RAS orientation, and
resized to the model's input size (averaged over each output cell where it shrinks). Only then does ``conform`` bring
channels and value type to what the model was trained on, as for any upload.

A 3D segmentation model takes the volume at the run's own voxel size instead, and its mask goes back
onto every acquired slice (``series_segmentation``): so the stored series keeps its slices too.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pydicom
import torch
import torch.nn.functional as F
from pydicom import Dataset

from medsight.data.prepare import InputSpec
from medsight.errors import BadInputError
from medsight.io.images import MedicalImage
from medsight.io.series import volume_from_datasets
from medsight.io.volume import Volume, canonical
from medsight.predict.conform import conform
from medsight.predict.decode import Limits
from medsight.predict.errors import IncompatibleImageError, TooManyPixelsError
from medsight.store import NotFoundError, Store, User
from medsight.train.segmentation_inference import SegmentationSpec

if TYPE_CHECKING:
    from medsight.predict.predictor import LoadedModel


@dataclass
class StoredSeries:
    volume: Volume
    source: Dataset  # the first slice (de-identified, without pixels): the SR and overlay refer to it
    slices: list[Dataset]  # every slice (with pixels), ordered along the slice normal: a SEG's sources


def require_3d(spec: InputSpec | SegmentationSpec, model_name: str) -> None:
    if spec.spatial_dims != 3:
        raise IncompatibleImageError(
            f"model '{model_name}' takes single {spec.spatial_dims}D images, not a series; predict on one of "
            "the series' instances ('instance') instead, or choose a 3D model."
        )


def read_stored_series(
    store: Store, series_uid: str, model: LoadedModel, limits: Limits, user: User, client: str | None = None
) -> StoredSeries:
    """The stored series as one volume for ``model``: NotFoundError when the store has no such series,
    IncompatibleImageError when the model takes 2D images (checked before anything is read)."""
    records = store.find_instances(series_uid)
    if not records:
        raise NotFoundError(f"no series with Series Instance UID {series_uid} in the store.")
    require_3d(input_spec(model), model.name)
    check_voxels(sum((r.rows or 0) * (r.columns or 0) * (r.frames or 1) for r in records), limits)
    raw = {r.sop_uid: store.get_instance_bytes(r.sop_uid, user=user, client=client) for r in records}
    datasets = [pydicom.dcmread(io.BytesIO(data)) for data in raw.values()]
    images = [d for d in datasets if "PixelData" in d]
    first = first_instance(images)
    return stack_series(
        images, pydicom.dcmread(io.BytesIO(raw[str(first.SOPInstanceUID)]), stop_before_pixels=True)
    )


def input_spec(model: LoadedModel) -> InputSpec | SegmentationSpec:
    """What the model takes: a segmenter's spec, or a classifier's."""
    return model.segmenter.spec if model.segmenter else model.spec


def check_voxels(voxels: int, limits: Limits) -> None:
    """Refused before any pixel is decoded when a series holds more voxels than ``limits`` allow."""
    if voxels > limits.max_pixels:
        raise TooManyPixelsError(
            f"the series holds {voxels / 1e6:.0f} million voxels, more than this server reads at once "
            f"({limits.max_pixels / 1e6:.0f} million)."
        )


def first_instance(datasets: list[Dataset]) -> Dataset:
    """The slice with the lowest instance number: the one an SR or overlay refers to."""
    return min(datasets, key=lambda d: int(d.get("InstanceNumber") or 0))


def stack_series(images: list[Dataset], header: Dataset) -> StoredSeries:
    """The slices of one series (with pixels) as one volume; ``header`` is the source the results refer to.
    IncompatibleImageError (saying why) when they cannot be stacked: gaps, mixed orientations, 4D..."""
    try:
        volume = volume_from_datasets(images)
    except BadInputError as err:  # the series itself cannot be made a volume: unprocessable, say why
        raise IncompatibleImageError(f"the series cannot be read as one volume: {err}") from None
    return StoredSeries(volume, header, sorted(images, key=along_normal))


def along_normal(dataset: Dataset) -> float:
    """A slice's distance along its plane's normal: the order ``volume_from_datasets`` stacks slices in."""
    cosines = np.array(dataset.ImageOrientationPatient, dtype=np.float64)
    return float(
        np.array(dataset.ImagePositionPatient, dtype=np.float64) @ np.cross(cosines[:3], cosines[3:])
    )


def volume_input(volume: Volume, spec: InputSpec, name: str) -> np.ndarray:
    """(C, D, H, W) at the model's input size, in its channels and value type."""
    turned = canonical(volume)  # models see one orientation, whatever the scanner's
    if min(turned.array.shape) < 2:
        raise IncompatibleImageError(
            f"{name}: a volume of {turned.array.shape} voxels is too thin to predict on."
        )
    sized = resized(turned.array, spec.image_size)
    return conform(MedicalImage(sized[None], None, {"format": "dicom-series"}), spec, name)


def resized(array: np.ndarray, size: int) -> np.ndarray:
    """(D, H, W) -> (size, size, size): averaged over each output cell where an axis shrinks (no aliasing,
    and fast on a 512 x 512 x 100 CT), linear where it grows."""
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    shrunk = tuple(min(side, size) for side in array.shape)
    if shrunk != array.shape:
        tensor = F.interpolate(tensor, size=shrunk, mode="area")
    if shrunk != (size,) * 3:
        tensor = F.interpolate(tensor, size=(size,) * 3, mode="trilinear", align_corners=False)
    return tensor[0, 0].numpy()
