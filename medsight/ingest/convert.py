"""From bytes to checked DICOM datasets: DICOM as it is; PNG, JPEG and NIfTI as Secondary Capture.

The format is found from the content, never from the file name. A DICOM file passes when its
header names the study, series and instance, it has pixel data, and that pixel data decodes
once with the codecs installed (pylibjpeg, openjpeg, RLE, GDCM, Pillow; 12-bit JPEG Extended by
GDCM through ``medsight.io.codecs``, which importing ``medsight.io`` below registers).

PNG/JPEG/NIfTI files carry no patient: each source file becomes its own patient (an ID derived
from the file's SHA-256, which de-identification turns into a pseudonym) unless the caller names
one. UIDs are derived from the content too, so ingesting the same file again is a duplicate.
A NIfTI volume becomes a Secondary Capture series, one single-frame instance per slice along the
third axis (rows = second axis, as stored), values mapped onto 16 bits with Rescale Slope and
Intercept recorded so they can be recovered. PNG/JPEG keep BurnedInAnnotation unknown (a screen
capture may show a name), so they are flagged; NIfTI volumes are reconstructions and say NO.
"""

from __future__ import annotations

import gzip
import hashlib
import io
from dataclasses import dataclass

import numpy as np
from pydicom import Dataset, dcmread
from pydicom.pixels import get_decoder
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from medsight.ingest.sources import Refused
from medsight.io.images import sniff_format

REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
UINT16_MAX = 65535


@dataclass
class Candidate:
    """One dataset ready for de-identification; ``part`` tells slices of one source apart."""

    dataset: Dataset
    part: str = ""


def candidates_from_bytes(data: bytes, max_bytes: int, patient_id: str | None = None) -> list[Candidate]:
    """The datasets in one file's bytes, checked; Refused says why not."""
    fmt = sniff_format(data[:544])
    if fmt is None and data[:2] in (b"\x02\x00", b"\x08\x00"):
        fmt = "dicom"  # a DICOM file without its 128-byte preamble starts with group 0002 or 0008
    if fmt == "dicom":
        return [Candidate(check_dicom(read_dicom(data)))]
    if fmt in ("png", "jpeg"):
        return [Candidate(picture_to_sc(data, patient_id))]
    if fmt == "nifti":
        return nifti_to_sc(data, max_bytes, patient_id)
    raise Refused("not a DICOM, NIfTI, PNG or JPEG file (checked by content, not by name).")


def read_dicom(data: bytes) -> Dataset:
    try:
        ds = dcmread(io.BytesIO(data), force=data[128:132] != b"DICM")
    except Exception as err:  # pydicom raises many types on damaged input; none may stop the batch
        raise Refused(f"truncated or damaged DICOM file ({type(err).__name__}).") from None
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:  # preamble-less files may have no file meta
        implicit = ds.original_encoding[0] if ds.original_encoding else True
        ds.ensure_file_meta()
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    return ds


def check_dicom(ds: Dataset) -> Dataset:
    """``ds`` if it is a complete image whose pixels decode; Refused (naming no header value) if not."""
    missing = [keyword for keyword in REQUIRED_UIDS if not str(ds.get(keyword, "") or "").strip()]
    if missing:
        raise Refused(f"incomplete DICOM header (no {', '.join(missing)}): truncated, or not an instance.")
    if not any(keyword in ds for keyword in PIXEL_KEYWORDS):
        sop_class = UID(str(ds.SOPClassUID))
        kind = sop_class.name if sop_class.is_valid and sop_class.name != sop_class else "non-image object"
        raise Refused(f"DICOM without pixel data ({kind}): only images are ingested.")
    meta = getattr(ds, "file_meta", None)
    if meta is None or not str(meta.get("TransferSyntaxUID", "") or ""):
        raise Refused("the DICOM file meta has no Transfer Syntax UID: the pixel data cannot be read.")
    decode_once(ds, UID(str(meta.TransferSyntaxUID)))
    return ds


def decode_once(ds: Dataset, syntax: UID) -> None:
    """Decode every frame once (without caching the array on the dataset): the proof pixels are usable."""
    label = f"{syntax.name} ({syntax})" if syntax.name != syntax else str(syntax)
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise Refused(f"undecodable transfer syntax {label}: no decoder exists for it.") from None
    if not decoder.is_available:
        raise Refused(f"undecodable transfer syntax {label}: no installed plugin decodes it.")
    try:
        decoder.as_array(ds)
    except Exception as err:  # the codecs' messages are about sizes and codecs, never header text
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        if len(lines) > 1 and "all available plugins" in lines[0]:  # each plugin said why not
            why = "; ".join(lines[1:])[:300]
            raise Refused(
                f"undecodable transfer syntax {label}: no installed plugin decodes it ({why})."
            ) from None
        first = (lines[0] if lines else "").split(" - ")[0][:160]
        raise Refused(f"pixel data in {label} does not decode ({type(err).__name__}: {first}).") from None


def _uid(*parts: str) -> str:
    """A 2.25 UID from a hash of ``parts``: the same content always gets the same UID."""
    return "2.25." + str(int(hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32], 16))


def _uids(digest: str, n: int) -> tuple[str, str, list[str]]:
    """Study, series and per-instance UIDs derived from the content."""
    return _uid(digest, "study"), _uid(digest, "series"), [_uid(digest, str(k)) for k in range(n)]


def _sc(
    pixels: np.ndarray,
    study: str,
    series: str,
    sop: str,
    number: int,
    patient_id: str,
    spacing: tuple[float, float] | None = None,
) -> Dataset:
    from highdicom.sc import SCImage

    colour = pixels.ndim == 3
    image = SCImage(
        pixel_array=pixels,
        photometric_interpretation="RGB" if colour else "MONOCHROME2",
        bits_allocated=8 if pixels.dtype == np.uint8 else 16,
        coordinate_system="PATIENT",
        study_instance_uid=study,
        series_instance_uid=series,
        series_number=1,
        sop_instance_uid=sop,
        instance_number=number,
        manufacturer="medsight",
        patient_id=patient_id,
        pixel_spacing=spacing,
        patient_orientation=("L", "P"),  # highdicom insists on one; emptied below
    )
    image.PatientOrientation = ""  # type 2: unknown, as a picture or a NIfTI slice does not tell
    return image


def _patient(digest: str, patient_id: str | None) -> str:
    return patient_id or f"MEDSIGHT-FILE-{digest[:20]}"


def _to_uint(array: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Pixels as uint8/uint16 plus (slope, intercept) so that original = stored * slope + intercept."""
    if array.dtype == np.uint8:
        return array, 1.0, 0.0
    if np.issubdtype(array.dtype, np.integer) and array.min() >= 0 and array.max() <= UINT16_MAX:
        return array.astype(np.uint16), 1.0, 0.0
    low, high = float(array.min()), float(array.max())
    slope = (high - low) / UINT16_MAX if high > low else 1.0
    stored = np.rint((array.astype(np.float64) - low) / slope).clip(0, UINT16_MAX).astype(np.uint16)
    return stored, slope, low


def picture_to_sc(data: bytes, patient_id: str | None) -> Dataset:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                pixels, slope, intercept = _to_uint(np.asarray(img))
            elif img.mode in ("L", "1", "LA"):
                pixels, slope, intercept = np.asarray(img.convert("L")), 1.0, 0.0
            else:
                pixels, slope, intercept = np.asarray(img.convert("RGB")), 1.0, 0.0
    except Exception as err:  # truncated PNG, bad JPEG, decompression bomb: Pillow's many errors
        raise Refused(f"the PNG/JPEG image does not decode ({type(err).__name__}).") from None
    digest = hashlib.sha256(data).hexdigest()
    study, series, (sop,) = _uids(digest, 1)
    ds = _sc(np.ascontiguousarray(pixels), study, series, sop, 1, _patient(digest, patient_id))
    if (slope, intercept) != (1.0, 0.0):
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:.10g}", f"{intercept:.10g}"
    return ds


def _nifti_image(data: bytes, max_bytes: int):  # noqa: ANN202 - a nibabel image
    import nibabel as nib

    if data[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as handle:
                data = handle.read(max_bytes + 1)  # bounded: a gzip bomb stops here
        except Exception as err:
            raise Refused(f"a damaged gzip stream ({type(err).__name__}).") from None
        if len(data) > max_bytes:
            raise Refused("the NIfTI volume unpacks to more than the file size limit.")
    kind = nib.Nifti2Image if data[344:348] == b"n+2\x00" else nib.Nifti1Image
    try:
        image = kind.from_bytes(data)
        return image, np.asanyarray(image.dataobj)
    except Exception as err:
        raise Refused(f"not a readable NIfTI file ({type(err).__name__}).") from None


def nifti_to_sc(data: bytes, max_bytes: int, patient_id: str | None) -> list[Candidate]:
    image, volume = _nifti_image(data, max_bytes)
    if volume.ndim == 4 and volume.shape[3] == 1:
        volume = volume[..., 0]
    if volume.ndim not in (2, 3) or volume.size == 0:
        raise Refused(f"a NIfTI image of shape {volume.shape}; only 2D images and 3D volumes are ingested.")
    if not np.all(np.isfinite(volume)):
        raise Refused("the NIfTI image holds NaN or infinite values.")
    volume = volume[..., None] if volume.ndim == 2 else volume
    stored, slope, intercept = _to_uint(np.asarray(volume))
    zooms = [float(z) for z in image.header.get_zooms()[:2]]
    spacing = (zooms[1], zooms[0]) if len(zooms) == 2 and min(zooms) > 0 else None
    digest = hashlib.sha256(data).hexdigest()
    study, series, sops = _uids(digest, stored.shape[2])
    candidates = []
    for k, sop in enumerate(sops):
        pixels = np.ascontiguousarray(stored[:, :, k].T)  # (x, y) -> rows = y, columns = x
        ds = _sc(pixels, study, series, sop, k + 1, _patient(digest, patient_id), spacing)
        ds.BurnedInAnnotation = "NO"
        if (slope, intercept) != (1.0, 0.0):
            ds.RescaleSlope, ds.RescaleIntercept = f"{slope:.10g}", f"{intercept:.10g}"
        part = f" [slice {k + 1}/{len(sops)}]" if len(sops) > 1 else ""
        candidates.append(Candidate(ds, part))
    return candidates
