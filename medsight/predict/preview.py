"""A picture of an upload for the browser: the decoded image as an 8-bit PNG, nothing stored.

A browser cannot draw a DICOM or NIfTI file, so the web UI asks for this before it predicts and lets
the clinician window, level and zoom it on a canvas. The grey values are stretched between the image's
0.5th and 99.5th percentiles: a CT's air and metal then do not squeeze the tissue into a few grey
levels, and the client's brightness/contrast sliders start from a sensible picture.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from medsight.predict.conform import display_copy
from medsight.predict.decode import Limits, decode_upload

LOW_PERCENTILE, HIGH_PERCENTILE = 0.5, 99.5


def _plane(array: np.ndarray) -> np.ndarray:
    """(C, H, W) from (C, H, W) or the middle slice of (C, D, H, W) (the slice an overlay shows)."""
    if array.ndim == 4:
        return array[:, array.shape[1] // 2]
    return array


def _to_uint8(array: np.ndarray) -> np.ndarray:
    array = np.nan_to_num(array.astype(np.float32))
    low, high = np.percentile(array, [LOW_PERCENTILE, HIGH_PERCENTILE])
    if high <= low:
        return np.zeros(array.shape, dtype=np.uint8)
    return np.clip(np.rint((array - low) / (high - low) * 255), 0, 255).astype(np.uint8)


def preview_png(data: bytes, limits: Limits, name: str | None = None) -> bytes:
    """PNG bytes of the upload as a person would look at it (RGB stays RGB, else the first channel)."""
    plane = display_copy(_plane(np.asarray(decode_upload(data, limits, name).image.array)))
    pixels = _to_uint8(plane)
    picture = np.moveaxis(pixels, 0, -1) if pixels.shape[0] == 3 else pixels[0]
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()
