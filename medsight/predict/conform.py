"""Bring a decoded image to what a model's ``InputSpec`` takes: dimensions, channels, value range.

Only unambiguous conversions are made: a single-slice volume is a 2D image, grey becomes RGB by
repeating the channel and RGB becomes grey by averaging (as ``preprocess_images`` does in training);
anything else (a 2-channel image, a stack of slices for a 2D model) is refused with a message that
says what the model takes. The size is left alone: ``prepare_images`` resizes per the spec.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from medsight.data.prepare import InputSpec
from medsight.io.images import MedicalImage
from medsight.predict.errors import IncompatibleImageError
from medsight.train.segmentation_inference import SegmentationSpec

DISPLAY_MAX_SIDE = 1024  # explanations are drawn on at most this many pixels a side


def _spatial(array: np.ndarray, spec: InputSpec | SegmentationSpec, name: str) -> np.ndarray:
    dims = array.ndim - 1
    if dims == 3 and spec.spatial_dims == 2 and array.shape[1] == 1:
        return array[:, 0]  # one slice of a volume (a single-frame NIfTI or DICOM) is a 2D image
    if dims == spec.spatial_dims:
        return array
    if dims == 3:
        raise IncompatibleImageError(
            f"{name}: a volume of {array.shape[1]} slices, but this model takes single 2D images; "
            "send one slice (or a 2D image)."
        )
    raise IncompatibleImageError(
        f"{name}: a {dims}D image, but this model takes {spec.spatial_dims}D volumes."
    )


def _channels(array: np.ndarray, spec: InputSpec | SegmentationSpec, name: str) -> np.ndarray:
    have, want = array.shape[0], spec.channels
    if have == want:
        return array
    if have == 1 and want == 3:
        return np.repeat(array, 3, axis=0)
    if have == 3 and want == 1:
        return array.mean(axis=0, keepdims=True)
    kinds = {1: "grey (1 channel)", 3: "colour (3 channels)"}
    raise IncompatibleImageError(
        f"{name}: an image with {have} channels, but this model takes {kinds.get(want, f'{want} channels')} "
        "and there is no unambiguous conversion; send a grey or an RGB image."
    )


def _value_range(array: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Values in the training images' type: e.g. a 12-bit DICOM for a model trained on 8-bit pictures."""
    dtype = np.dtype(spec.source_dtype)
    if not np.issubdtype(dtype, np.integer):
        return array.astype(np.float32)
    top = float(np.iinfo(dtype).max)
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > top:  # beyond the type's range: stretch the image's own range onto it
        array = (array - low) / (high - low) * top if high > low else np.zeros_like(array)
    return np.clip(np.rint(array), 0, top).astype(dtype)


def conform_layout(image: MedicalImage, spec: InputSpec | SegmentationSpec, name: str) -> np.ndarray:
    """(C, *spatial) float32 in the spec's dimensions and channels, values as they were.

    A segmentation model normalises each image itself (``SegmentationSpec.intensity``), some in the
    scanner's own units (CT), so its input keeps its values; a classifier's gets ``conform``.
    """
    array = _spatial(np.asarray(image.array, dtype=np.float32), spec, name)
    return _channels(array, spec, name)


def conform(image: MedicalImage, spec: InputSpec, name: str) -> np.ndarray:
    """(C, *spatial) in the spec's channels and stored type, at the image's own size."""
    return _value_range(conform_layout(image, spec, name), spec)


def display_copy(array: np.ndarray) -> np.ndarray:
    """A 2D image shrunk so that its longer side is at most DISPLAY_MAX_SIDE (volumes stay as they are).

    The map is computed at the network's few dozen pixels anyway; drawing it on millions of pixels
    only makes the overlay PNG slow to make and to send.
    """
    if array.ndim != 3 or max(array.shape[1:]) <= DISPLAY_MAX_SIDE:
        return array
    scale = DISPLAY_MAX_SIDE / max(array.shape[1:])
    size = tuple(max(1, round(side * scale)) for side in array.shape[1:])
    tensor = torch.from_numpy(array.astype(np.float32))[None]
    shrunk = F.interpolate(tensor, size=size, mode="area")[0].numpy()
    return np.rint(shrunk).astype(array.dtype) if np.issubdtype(array.dtype, np.integer) else shrunk
