"""Pictures of an explanation: the image with its map in colour, and the raw map, as PNG bytes.

The serving layer returns these bytes as they are. Volumes are shown by one slice: the one where
the map holds the most mass (where the model looked), or the middle one when the map is empty.
"""

from __future__ import annotations

import functools
import struct
import zlib

import matplotlib
import numpy as np

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


@functools.lru_cache(maxsize=16)
def _colour_table(colormap: str) -> np.ndarray:
    """The map's N colours as an (N, 3) array of floats in [0, 1]."""
    try:
        cmap = matplotlib.colormaps[colormap]
    except KeyError as err:
        raise BadInputError(f"unknown colour map '{colormap}'; try jet, inferno or viridis.") from err
    table = cmap(np.arange(cmap.N))[:, :3]
    table.flags.writeable = False  # shared by every caller
    return table


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
    lut = _colour_table(colormap)
    plane, weights = _planes(image, saliency, slice_index)
    # the colour map's own lookup (matplotlib bins [0, 1] into its N entries the same way), on a cached table
    index = (np.clip(np.nan_to_num(weights), 0.0, 1.0) * len(lut)).astype(np.intp)
    colour = lut[np.minimum(index, len(lut) - 1)]
    return (1.0 - opacity) * display_image(plane) + opacity * colour


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(array: np.ndarray) -> bytes:
    """(H, W) grey or (H, W, 3) RGB, 8 or 16 bits, as PNG bytes (no row filters).

    Written by hand: every prediction sends two small PNGs, and Pillow's encoder costs more in setting
    itself up than in compressing a few thousand pixels.
    """
    height, width = array.shape[:2]
    colour = 2 if array.ndim == 3 else 0  # PNG colour types: 2 = RGB, 0 = grey
    big_endian = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder(">"))
    rows = big_endian.view(np.uint8).reshape(height, -1)
    scanlines = np.hstack([np.zeros((height, 1), np.uint8), rows])  # filter type 0 before each row
    header = struct.pack(">IIBBBBB", width, height, 8 * array.dtype.itemsize, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 6))
        + _chunk(b"IEND", b"")
    )


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
