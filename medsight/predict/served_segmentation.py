"""A segmentation model in service: uploaded bytes -> the mask, its area, and the PNGs the API serves.

The upload is decoded like any prediction's (content sniffed, byte and pixel limits before decoding,
``decode``), brought to the model's dimensions and channels (``conform_layout``: the values stay as
they are, the segmenter normalises them itself), and segmented by ``segmentation.segment_array``, the
function ``medsight predict`` calls: a file gets the same mask whichever door it came through. For a
DICOM image the service adds a DICOM SEG over the stored source (``dicom_results.segmentation_object``).

A region of interest (a field-of-view mask, uploaded beside the image) is decoded the same way and
checked as ``medsight predict --roi`` and training check one (``segmentation.checked_roi``); with it the
image is normalised inside it and nothing outside it is called structure, as the model was trained
when its run records ``trained_with_roi``. The answer says whether one was applied, and when a model
trained with one got none.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medsight.data.segmentation import pixel_spacing
from medsight.predict.conform import conform_layout
from medsight.predict.decode import Decoded, Limits, decode_upload, safe_name
from medsight.predict.errors import IncompatibleImageError
from medsight.predict.loaded import LoadedModel
from medsight.predict.segmentation import DEFAULT_CLASSES, checked_roi, result_pngs, segment_array
from medsight.predict.timing import elapsed_ms
from medsight.train.segmentation_inference import Segmenter

Upload = tuple[str | None, bytes]  # (the client's file name, only for messages; the bytes)
NO_ROI = (
    "no region of interest was given, though the model was trained with one: the whole image was "
    "segmented; send the image's field-of-view mask as the field 'roi' to segment as it was trained."
)


@dataclass
class SegmentationPrediction:
    label: str  # the structure outlined (the model's foreground class), or the background's when none is
    classes: list[str]
    threshold: float
    model: dict[str, str]  # {"name", "version"}
    shape: list[int]  # the mask's (spatial) shape: the image's own
    foreground_pixels: int
    spacing: tuple[float, ...] | None  # mm per pixel along each axis, when the image says
    timing_ms: dict[str, float]
    mask: np.ndarray = field(repr=False)  # uint8, 1 = structure
    pngs: dict[str, bytes] = field(repr=False)  # overlay, and for 2D images mask and probs
    info: dict = field(repr=False)  # the model's inference info (for the DICOM SEG)
    source: Decoded | None = field(default=None, repr=False)
    roi_applied: bool = False
    trained_with_roi: bool = False

    @property
    def foreground_fraction(self) -> float:
        return self.foreground_pixels / max(1, self.mask.size)

    @property
    def area(self) -> float | None:
        """The mask's area in mm² (volume in mm³ for 3D), from the image's pixel spacing; None without it."""
        return None if self.spacing is None else float(self.foreground_pixels * np.prod(self.spacing))

    def summary(self) -> dict:
        """What the API answers besides the links: JSON-ready."""
        return {
            "foreground_fraction": self.foreground_fraction,
            "foreground_pixels": self.foreground_pixels,
            "shape": self.shape,
            "area_mm2" if len(self.shape) == 2 else "volume_mm3": self.area,
            "pixel_spacing_mm": list(self.spacing) if self.spacing else None,
            "roi_applied": self.roi_applied,
            "roi_note": NO_ROI if self.trained_with_roi and not self.roi_applied else None,
        }


def segmenter_of(model: LoadedModel) -> Segmenter:
    if model.segmenter is None:
        raise IncompatibleImageError(f"model '{model.name}' is not a segmentation model.")
    return model.segmenter


def finding(info: dict, mask: np.ndarray) -> tuple[str, list[str]]:
    """The structure's name when the mask holds any of it, else the background's; and the class names."""
    classes = list(info.get("classes") or DEFAULT_CLASSES)
    return (classes[-1] if mask.any() else classes[0]), classes


def upload_roi(roi: Upload, image: np.ndarray, image_name: str | None, limits: Limits) -> np.ndarray:
    """The uploaded region of interest as the image's binary ROI (decoded within ``limits``, checked)."""
    name, data = roi
    decoded = decode_upload(data, limits, name)
    shown = Path(safe_name(name) if name else "the roi")
    return checked_roi(np.asarray(decoded.image.array), image, Path(safe_name(image_name)), shown)


def segment_upload(
    data: bytes,
    filename_hint: str | None,
    model: LoadedModel,
    limits: Limits,
    roi: Upload | None = None,
) -> SegmentationPrediction:
    """Decode (within ``limits``), conform, segment at the run's threshold (inside ``roi`` when one is
    uploaded) and draw the PNGs."""
    segmenter = segmenter_of(model)
    start = time.perf_counter()
    decoded = decode_upload(data, limits, filename_hint)
    image = conform_layout(decoded.image, segmenter.spec, safe_name(filename_hint))
    region = None if roi is None else upload_roi(roi, image, filename_hint, limits)
    preprocess_ms, start = elapsed_ms(start), time.perf_counter()
    result = segment_array(segmenter, image, region)
    inference_ms, start = elapsed_ms(start), time.perf_counter()
    pngs = result_pngs(image, result)
    label, classes = finding(segmenter.info, result.mask)
    return SegmentationPrediction(
        label=label,
        classes=classes,
        threshold=result.threshold,
        model={"name": model.name, "version": model.version},
        shape=list(result.mask.shape),
        foreground_pixels=int(result.mask.sum()),
        spacing=_spacing(decoded, result.mask.ndim),
        timing_ms={"preprocess": preprocess_ms, "inference": inference_ms, "explain": elapsed_ms(start)},
        mask=result.mask,
        pngs=pngs,
        info=segmenter.info,
        source=decoded,
        roi_applied=region is not None,
        trained_with_roi=bool(segmenter.info.get("trained_with_roi")),
    )


def _spacing(decoded: Decoded, dims: int) -> tuple[float, ...] | None:
    spacing = pixel_spacing(decoded.image)
    if spacing is not None and len(spacing) == dims + 1:  # a single-slice volume, read as 2D
        spacing = spacing[1:]
    return spacing if spacing is not None and len(spacing) == dims else None
