"""Read PNG/JPEG, DICOM and NIfTI files into one form.

A ``MedicalImage`` is a channel-first float32 array (``(C, H, W)`` or ``(C, D, H, W)``) with its
voxel spacing in millimetres (when the format knows it) and a little non-identifying metadata.
The format is found from the file's content, never trusted from its name. A folder or a zip file is
read as one DICOM series and stacked into a volume (``medsight.io.series``: sorted by position, tilt
and uneven spacing corrected).
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medsight.errors import BadInputError


@dataclass
class MedicalImage:
    array: np.ndarray
    spacing: tuple[float, ...] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def spatial_dims(self) -> int:
        return self.array.ndim - 1


def sniff_format(head: bytes) -> str | None:
    """The format of a file from its first bytes: 'png', 'jpeg', 'dicom', 'nifti' or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x1f\x8b"):
        return "nifti"  # gzip: in medical imaging, a .nii.gz; nibabel checks the inside
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00", b"n+2\x00"):
        return "nifti"
    return None


def read_image(path: str | Path) -> MedicalImage:
    """Read one image file, or a DICOM series (a folder or a zip of one series) as one volume.

    Raise BadInputError naming the file if it cannot be used.
    """
    path = Path(path)
    if path.is_dir() or _is_zip(path):
        from medsight.io.series import read_series  # a series is stacked, sorted and made regular there

        return read_series(path).to_image()
    fmt = file_format(path)
    readers = {"png": _read_pillow, "jpeg": _read_pillow, "dicom": _read_dicom, "nifti": _read_nifti}
    if fmt not in readers:
        raise BadInputError(
            f"{path}: not a PNG, JPEG, DICOM or NIfTI file (checked by content, not by name)."
        )
    return _finite(path, _decoded(path, fmt, readers[fmt]))


def read_dicom_file(path: str | Path) -> tuple[MedicalImage, Any]:
    """One DICOM file's image (as ``read_image`` gives it) and its pydicom dataset: the file read once.

    For outputs that join the image's study, e.g. a DICOM SEG over it. The dataset holds the
    patient's identifiers: keep it no longer than that output needs, and never log it.
    """
    path = Path(path)
    dataset = _decoded(path, "dicom", _dicom_dataset)
    return _finite(path, _decoded(path, "dicom", lambda _: _dicom_image(dataset, path))), dataset


def file_format(path: Path) -> str | None:
    """A file's format from its content (``sniff_format``); a ``.dcm`` name vouches for DICOM without preamble."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(544)
    except OSError as err:
        raise BadInputError(f"{path}: cannot read the file ({err.strerror or err}).") from err
    fmt = sniff_format(head)
    if fmt is None and path.suffix.lower() == ".dcm":
        fmt = "dicom"  # DICOM files without the 128-byte preamble exist in the wild
    return fmt


def _decoded(path: Path, fmt: str, read: Callable[[Path], Any]) -> Any:
    """``read(path)``, with a decoder's own error turned into one that names the file and why."""
    try:
        return read(path)
    except BadInputError:
        raise
    except Exception as err:
        raise BadInputError(
            f"{path}: cannot decode this {fmt.upper()} file ({type(err).__name__}: {err})."
        ) from err


def _finite(path: Path, image: MedicalImage) -> MedicalImage:
    if not np.all(np.isfinite(image.array)):
        raise BadInputError(f"{path}: the image holds NaN or infinite values.")
    return image


def _is_zip(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == b"PK\x03\x04"
    except OSError:
        return False  # read_image says what is wrong with the file


def _read_pillow(path: Path) -> MedicalImage:
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        if img.mode in ("I;16", "I;16B", "I", "F"):
            array = np.asarray(img, dtype=np.float32)[None]
        elif img.mode in ("L", "1"):
            array = np.asarray(img.convert("L"), dtype=np.float32)[None]
        else:
            array = np.moveaxis(np.asarray(img.convert("RGB"), dtype=np.float32), -1, 0)
    return MedicalImage(array, None, {"format": "png/jpeg"})


def _dicom_dataset(path: Path) -> Any:
    import pydicom

    return pydicom.dcmread(path, force=True)


def _read_dicom(path: Path) -> MedicalImage:
    return _dicom_image(_dicom_dataset(path), path)


def _dicom_image(dataset: Any, path: Path) -> MedicalImage:
    """The pixels of a read DICOM dataset, rescaled, MONOCHROME1 flipped, channel-first."""
    from pydicom.pixels import apply_rescale

    if "PixelData" not in dataset:
        raise BadInputError(f"{path}: this DICOM file has no pixel data (it is not an image).")
    pixels = dataset.pixel_array
    pixels = apply_rescale(pixels, dataset).astype(np.float32)
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "MONOCHROME1":  # bright means low: flip so that every image reads the same way
        pixels = pixels.max() + pixels.min() - pixels
    samples = int(dataset.get("SamplesPerPixel", 1))
    # (rows, cols, 3) -> (3, rows, cols); one frame (1, H, W); a multi-frame volume (1, frames, H, W)
    array = np.moveaxis(pixels, -1, 0) if samples > 1 else pixels[None]
    spacing = dataset.get("PixelSpacing")
    metadata = {"format": "dicom", "modality": str(dataset.get("Modality", "")) or None}
    return MedicalImage(array, tuple(float(s) for s in spacing) if spacing else None, metadata)


def _read_nifti(path: Path) -> MedicalImage:
    import nibabel as nib

    if path.read_bytes()[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path) as handle:
                handle.read(4)
        except OSError as err:
            raise BadInputError(f"{path}: a gzip file that cannot be opened ({err}).") from err
    image = nib.load(str(path))
    data = np.asarray(image.dataobj, dtype=np.float32)
    if data.ndim == 2:
        array = data.T[None]  # NIfTI stores (x, y); images here are (rows, cols)
    elif data.ndim == 3:
        array = np.transpose(data, (2, 1, 0))[None]  # (x, y, z) -> (1, z, y, x)
    elif data.ndim == 4 and data.shape[2] == 1:  # (x, y, 1, channels): a 2D multi-channel image
        array = np.transpose(data[:, :, 0], (2, 1, 0))
    else:
        raise BadInputError(f"{path}: NIfTI image of shape {data.shape}; expected a 2D image or a 3D volume.")
    zooms = tuple(float(z) for z in image.header.get_zooms()[: data.ndim])
    return MedicalImage(array, zooms[::-1], {"format": "nifti"})
