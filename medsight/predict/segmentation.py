"""Segment new images with a trained run: probability map, mask, a PNG overlay, a DICOM SEG.

``segment_file`` is what ``medsight predict`` and the API can call for a segmentation model: the
image is read like any medsight input (PNG/JPEG/DICOM/NIfTI, and DRIVE's TIFF/GIF), segmented by
sliding-window inference with the run's preparation, and the mask is cut at the threshold the run's
evaluation chose on validation. A region of interest (e.g. a field-of-view mask) is optional: with
one, intensities are normalised inside it and nothing outside it is called structure.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medsight.data.segmentation import binary_mask, check_pair, read_any_image
from medsight.errors import BadInputError
from medsight.io.images import file_format, read_dicom_file
from medsight.train.segmentation_inference import Segmenter, load_segmenter

OVERLAY_COLOUR = np.array([255, 40, 40], dtype=np.float32)
OVERLAY_ALPHA = 0.6
DEFAULT_CLASSES = ("background", "structure")  # a run that recorded no class names


@dataclass
class SegmentationResult:
    probabilities: np.ndarray  # (*spatial) float32 in [0, 1]
    mask: np.ndarray  # (*spatial) uint8, 1 = structure
    threshold: float

    @property
    def foreground_share(self) -> float:
        return float(self.mask.mean())


def segment_array(
    segmenter: Segmenter, image: np.ndarray, roi: np.ndarray | None = None
) -> SegmentationResult:
    """A stored image (C, *spatial) -> probabilities and the mask at the run's threshold."""
    probs = segmenter.probabilities(image, roi).astype(np.float32)
    return SegmentationResult(probs, (probs >= segmenter.threshold).astype(np.uint8), segmenter.threshold)


def _display_rgb(image: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, W, 3) uint8, stretched between the 0.5th and 99.5th percentiles."""
    plane = image[:, image.shape[1] // 2] if image.ndim == 4 else image
    array = plane.astype(np.float32)
    low, high = np.percentile(array, [0.5, 99.5])
    scaled = np.clip((array - low) / max(high - low, 1e-6) * 255, 0, 255)
    rgb = np.moveaxis(scaled, 0, -1) if scaled.shape[0] == 3 else np.repeat(scaled[0][..., None], 3, axis=-1)
    return rgb


def overlay_png(image: np.ndarray, mask: np.ndarray) -> bytes:
    """PNG bytes: the image with the mask tinted red (volumes: the middle slice)."""
    rgb = _display_rgb(image)
    plane = mask[mask.shape[0] // 2] if mask.ndim == 3 else mask
    where = plane > 0
    rgb[where] = (1 - OVERLAY_ALPHA) * rgb[where] + OVERLAY_ALPHA * OVERLAY_COLOUR
    buffer = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def mask_png(mask: np.ndarray) -> bytes:
    """PNG bytes of a 2D mask, 0 and 255 (what ``medsight data import`` reads back as a mask)."""
    if mask.ndim != 2:
        raise BadInputError("a PNG mask holds a 2D image; save volumes as NIfTI.")
    buffer = io.BytesIO()
    Image.fromarray((mask > 0).astype(np.uint8) * 255).save(buffer, format="PNG")
    return buffer.getvalue()


def result_pngs(image: np.ndarray, result: SegmentationResult) -> dict[str, bytes]:
    """``overlay`` (the image with the mask tinted), and for 2D images ``mask`` (0/255) and ``probs``."""
    outputs = {"overlay": overlay_png(image, result.mask)}
    if result.mask.ndim == 2:
        outputs["mask"] = mask_png(result.mask)
        outputs["probs"] = _probs_png(result.probabilities)
    return outputs


def checked_roi(array: np.ndarray, image: np.ndarray, image_path: Path, roi_path: Path) -> np.ndarray:
    """A read region-of-interest image as ``image``'s binary ROI, checked like a training ROI (binary,
    the image's size, not empty); the paths name the two in messages."""
    roi = binary_mask(array, roi_path, "roi")
    paths = {"image": image_path, "mask": roi_path, "roi": roi_path}
    check_pair(image, np.ones(image.shape[1:], dtype=np.uint8), roi, paths)
    return roi


def read_roi(path: Path, image: np.ndarray, image_path: Path) -> np.ndarray:
    """A region-of-interest mask for ``image`` from a file."""
    return checked_roi(read_any_image(path), image, image_path, path)


def read_input(image_path: Path) -> tuple[np.ndarray, Any | None]:
    """The image to segment and, for one DICOM file, its dataset (the SEG's source), the file read once.

    A series folder gets no dataset: ``batch.segment_inputs`` reads a folder's series as one volume and
    makes their SEG (``series_segmentation``, as the API does).
    """
    if image_path.is_file() and file_format(image_path) == "dicom":
        image, dataset = read_dicom_file(image_path)
        return image.array, dataset
    return read_any_image(image_path), None


def segment_file(
    run: Path | Segmenter,
    image_path: Path,
    out_dir: Path,
    *,
    roi_path: Path | None = None,
    stem: str | None = None,
) -> dict[str, Path | float]:
    """Segment one image file with a run folder (or a loaded ``Segmenter``) into ``out_dir``.

    Writes ``STEM_overlay.png``, and for 2D images ``STEM_mask.png`` (0/255) and ``STEM_probs.png``;
    a DICOM input also gets ``STEM_seg.dcm``, a DICOM SEG over it that joins its study. ``stem``
    defaults to the file name without its suffixes.
    """
    segmenter = run if isinstance(run, Segmenter) else load_segmenter(run)
    image, source = read_input(image_path)
    roi = read_roi(roi_path, image, image_path) if roi_path else None
    result = segment_array(segmenter, image, roi)
    stem = stem or image_path.name.split(".")[0]
    written: dict[str, Path | float] = {
        "threshold": result.threshold,
        "foreground_share": result.foreground_share,
    }
    seg = dicom_seg([source], result.mask, segmenter.info) if source is not None else None
    out_dir.mkdir(parents=True, exist_ok=True)
    for kind, data in result_pngs(image, result).items():
        path = out_dir / f"{stem}_{kind}.png"
        path.write_bytes(data)
        written[kind] = path
    if seg is not None:
        written["seg"] = out_dir / f"{stem}_seg.dcm"
        seg.save_as(written["seg"])
    return written


def _probs_png(probs: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.round(np.clip(probs, 0, 1) * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def dicom_seg(sources: list, mask: np.ndarray, info: dict, *, label: str | None = None):
    """A DICOM Segmentation (binary, highdicom) of ``mask`` over its source DICOM image(s).

    ``sources`` are the pydicom datasets the mask was computed from (one image, or a series' slices
    in the order of the mask's first axis). Patient and study attributes are copied from them, so
    the SEG joins the study as a new series that viewers and PACS overlay on the image.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from medsight import __version__

    label = label or (info.get("classes") or DEFAULT_CLASSES)[-1]
    if info.get("modality") == "fundus":
        structure = codes.SCT.BloodVessel
    else:  # model vocabulary, not a SNOMED concept: a private scheme, as the SR results use
        structure = hd.sr.CodedConcept("SEG1", "99MEDSIGHT", label)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=f"medsight {info.get('model', 'segmentation')}",
        version=__version__,
        family=codes.cid7162.ArtificialIntelligence,
    )
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=label[:64],
        segmented_property_category=codes.SCT.AnatomicalStructure,
        segmented_property_type=structure,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )
    if len(sources) != (mask.shape[0] if mask.ndim == 3 else 1):
        raise BadInputError(f"{len(sources)} source images for a mask of shape {mask.shape}.")
    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=(mask > 0).astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=hd.UID(),
        series_number=901,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medsight",
        manufacturer_model_name=str(info.get("model", "segmentation")),
        software_versions=__version__,
        device_serial_number="0",
    )
