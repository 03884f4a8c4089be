"""Pictures of an explanation: the image with its map in colour, and the raw map, as PNG bytes.

The serving layer returns these bytes as they are. Volumes are shown by one slice: the one where
the map holds the most mass (where the model looked), or the middle one when the map is empty.
"""

from __future__ import annotations

import io

import matplotlib
import numpy as np
from PIL import Image

from medsight.errors import BadInputError


def choose_slice(saliency: np.ndarray) -> int:
    """For a (D, H, W) map: the slice with the largest map mass, or the middle slice if it is empty."""
    mass = saliency.reshape(saliency.shape[0], -1).sum(axis=1)
    return int(mass.argmax()) if mass.max() > 0 else saliency.shape[0] // 2


def _planes(
    image: np.ndarray, saliency: np.ndarray, slice_index: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Image as (C, H, W) and map as (H, W); a volume is cut at ``slice_index`` (or the chosen slice)."""
    saliency = np.asarray(saliency, dtype=np.float64)
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == saliency.ndim:  # no channel axis given
        image = image[None]
    if image.shape[1:] != saliency.shape or saliency.ndim not in (2, 3):
        raise BadInputError(
            f"image {tuple(image.shape)} and map {tuple(saliency.shape)} do not match: "
            "the map needs the image's spatial shape (H, W) or (D, H, W)."
        )
    if saliency.ndim == 3:
        index = choose_slice(saliency) if slice_index is None else slice_index
        if not 0 <= index < saliency.shape[0]:
            raise BadInputError(f"slice {index} is outside the volume's {saliency.shape[0]} slices.")
        image, saliency = image[:, index], saliency[index]
    return image, saliency


def display_image(image: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, W, 3) in [0, 1]: grey or RGB, windowed to the 1st-99th percentile.

    Percentiles rather than min/max: one hot pixel or a CT's air would otherwise wash the image out.
    """
    shown = np.moveaxis(image[:3], 0, -1) if image.shape[0] == 3 else np.repeat(image[0][..., None], 3, -1)
    lo, hi = np.nanpercentile(shown, [1, 99])
    if hi <= lo:
        lo, hi = np.nanmin(shown), np.nanmax(shown)
    scaled = (shown - lo) / (hi - lo) if hi > lo else np.zeros_like(shown)
    return np.clip(np.nan_to_num(scaled), 0.0, 1.0)


def overlay_rgb(
    image: np.ndarray,
    saliency: np.ndarray,
    opacity: float = 0.45,
    colormap: str = "jet",
    slice_index: int | None = None,
) -> np.ndarray:
    """The image blended with the coloured map, (H, W, 3) floats in [0, 1]."""
    if not 0.0 <= opacity <= 1.0:
        raise BadInputError(f"opacity must be between 0 and 1, not {opacity}.")
    try:
        cmap = matplotlib.colormaps[colormap]
    except KeyError as err:
        raise BadInputError(f"unknown colour map '{colormap}'; try jet, inferno or viridis.") from err
    plane, weights = _planes(image, saliency, slice_index)
    colour = cmap(np.clip(weights, 0.0, 1.0))[..., :3]
    return (1.0 - opacity) * display_image(plane) + opacity * colour


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")  # uint8 -> L or RGB, uint16 -> I;16
    return buffer.getvalue()


def overlay_png(
    image: np.ndarray,
    saliency: np.ndarray,
    opacity: float = 0.45,
    colormap: str = "jet",
    slice_index: int | None = None,
) -> bytes:
    """PNG bytes of the image (H x W, as stored) with the map over it in ``colormap`` at ``opacity``."""
    rgb = overlay_rgb(image, saliency, opacity, colormap, slice_index)
    return _png(np.round(rgb * 255).astype(np.uint8))


def map_png(saliency: np.ndarray, bits: int = 8, slice_index: int | None = None) -> bytes:
    """The raw map as a grey PNG (0 = no importance, white = the peak); 8 or 16 bits per pixel."""
    saliency = np.asarray(saliency, dtype=np.float64)
    if saliency.ndim == 3:
        _, saliency = _planes(saliency[None], saliency, slice_index)
    if saliency.ndim != 2:
        raise BadInputError(f"a map is (H, W) or (D, H, W), not shaped {tuple(saliency.shape)}.")
    if bits not in (8, 16):
        raise BadInputError(f"map PNGs hold 8 or 16 bits per pixel, not {bits}.")
    top = 255 if bits == 8 else 65535
    values = np.round(np.clip(np.nan_to_num(saliency), 0.0, 1.0) * top)
    return _png(values.astype(np.uint8 if bits == 8 else np.uint16))
