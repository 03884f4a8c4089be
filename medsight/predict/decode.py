"""From uploaded bytes to a ``MedicalImage``, with limits checked before any pixel is decoded.

The format comes from the content (``medsight.io.sniff_format``), never from the name the client
gave. The pixel count is read from the header (PNG/JPEG size, DICOM rows x columns x frames, NIfTI
dimensions) and refused above the limit, so a small file that would unpack into gigabytes (a
100-megapixel PNG of zeros is a few hundred kB) never gets that far. Decoding itself is done by the
readers training used (``medsight.io.read_image``): PNG and JPEG from memory, DICOM and NIfTI from a
temporary file whose name is ours. The client's file name is only ever used, cleaned, in messages.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import tempfile
import warnings
from dataclasses import dataclass

from medsight.errors import BadInputError
from medsight.io.images import MedicalImage, read_image, sniff_format
from medsight.io.images import _read_pillow as read_picture  # read_image's own reader for PNG/JPEG
from medsight.predict.errors import (
    EmptyUploadError,
    PredictInputError,
    TooManyPixelsError,
    UnsupportedFormatError,
    UploadTooLargeError,
)

NIFTI_HEADER_BYTES = 540  # a NIfTI-2 header; NIfTI-1 needs 348


@dataclass(frozen=True)
class Limits:
    """What one prediction accepts: bytes on the wire and pixels once decoded."""

    max_bytes: int = 64 * 2**20
    max_pixels: int = 50_000_000


@dataclass
class Decoded:
    image: MedicalImage
    format: str  # "png", "jpeg", "dicom" or "nifti"
    sha256: str


def safe_name(name: str | None) -> str:
    """The client's file name fit for a message: last path part, printable, short."""
    base = re.split(r"[\\/]", name or "")[-1]
    cleaned = re.sub(r"[^\w .()+-]", "_", base)[:80].strip()
    return cleaned or "the upload"


def sniff(data: bytes, name: str) -> str:
    fmt = sniff_format(data[:544])
    if fmt is None and data[:2] in (b"\x02\x00", b"\x08\x00"):
        fmt = "dicom"  # a DICOM file without its 128-byte preamble starts with group 0002 or 0008
    if fmt is None:
        raise UnsupportedFormatError(
            f"{name}: not a DICOM, PNG, JPEG or NIfTI image (judged by its content, not its name); "
            "send one of those."
        )
    return fmt


def _picture_pixels(data: bytes) -> int:
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit speaks instead
        try:
            with Image.open(io.BytesIO(data)) as img:  # reads the header only
                width, height = img.size
        except Image.DecompressionBombError:
            return 2**62
    return width * height


def _dicom_pixels(data: bytes) -> int:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=data[128:132] != b"DICM")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0) * frames


def _nifti_pixels(data: bytes) -> int:
    import nibabel as nib

    head = data[:NIFTI_HEADER_BYTES]
    if data[:2] == b"\x1f\x8b":
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as handle:
            head = handle.read(NIFTI_HEADER_BYTES)  # bounded: only the header is unpacked here
    kind = nib.Nifti2Header if head[:4] in (b"\x1c\x02\x00\x00", b"\x00\x00\x02\x1c") else nib.Nifti1Header
    shape = kind.from_fileobj(io.BytesIO(head), check=False).get_data_shape()
    count = 1
    for extent in shape:
        count *= int(extent)
    return count


def declared_pixels(data: bytes, fmt: str, name: str) -> int:
    """Pixels (times frames or slices) the header promises; BadInputError when it cannot be read."""
    reader = {"png": _picture_pixels, "jpeg": _picture_pixels, "dicom": _dicom_pixels, "nifti": _nifti_pixels}
    try:
        return reader[fmt](data)
    except Exception as err:  # each library raises its own types on damaged headers
        kind = "DICOM" if fmt == "dicom" else fmt.upper()
        raise PredictInputError(
            f"{name}: a damaged or truncated {kind} file; its header cannot be read ({type(err).__name__})."
        ) from None


def check_size(data: bytes, limits: Limits, name: str) -> None:
    if not data:
        raise EmptyUploadError(f"{name}: the file is empty (0 bytes); send it again with its content.")
    if len(data) > limits.max_bytes:
        raise UploadTooLargeError(
            f"{name}: {len(data) / 2**20:.1f} MiB is more than this server accepts "
            f"({limits.max_bytes / 2**20:.0f} MiB); send a smaller file."
        )


def _read(data: bytes, fmt: str, name: str) -> MedicalImage:
    if fmt in ("png", "jpeg"):  # Pillow reads from memory: a temporary file would only cost time
        try:
            return read_picture(io.BytesIO(data))
        except Exception as err:  # Pillow's own error types
            raise PredictInputError(
                f"{name}: cannot decode this {fmt.upper()} file ({type(err).__name__})."
            ) from None
    # The suffix is ours: read_image recognises preamble-less DICOM by it, and nibabel needs one.
    suffix = {"dicom": ".dcm", "nifti": ".nii.gz" if data[:2] == b"\x1f\x8b" else ".nii"}.get(fmt, "")
    with tempfile.NamedTemporaryFile(prefix="medsight-predict-", suffix=suffix) as handle:
        handle.write(data)
        handle.flush()
        try:
            return read_image(handle.name)
        except BadInputError as err:  # name the client's file, never our temporary one
            raise PredictInputError(str(err).replace(handle.name, name)) from None


def decode_upload(data: bytes, limits: Limits, name: str | None = None) -> Decoded:
    """The image in ``data``, or a PredictInputError saying what was wrong (nothing is stored either way)."""
    shown = safe_name(name)
    check_size(data, limits, shown)
    fmt = sniff(data, shown)
    pixels = declared_pixels(data, fmt, shown)
    if pixels > limits.max_pixels:
        raise TooManyPixelsError(
            f"{shown}: {pixels / 1e6:.0f} megapixels is more than this server decodes "
            f"({limits.max_pixels / 1e6:.0f} megapixels); send a smaller image."
        )
    if pixels == 0 and fmt != "dicom":  # a DICOM without pixels: read_image says so in its words
        raise PredictInputError(f"{shown}: the image header declares no pixels.")
    image = _read(data, fmt, shown)
    return Decoded(image, fmt, hashlib.sha256(data).hexdigest())
