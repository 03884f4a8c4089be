"""``medsight export-dataset``: de-identified files plus a manifest that ``medsight data import`` reads.

What goes out: every stored instance matching the filters (modality of its series, a substring
of its study's description), except those flagged for burned-in text or faces and not cleared by
an admin. Files are the stored, already de-identified objects: as DICOM unchanged, or decoded
(modality rescale applied, MONOCHROME1 inverted) into NIfTI (float32; a multi-frame instance
becomes a volume) or 16-bit PNG (min-max scaled; a multi-frame instance gives its middle frame).
Each file is named by its (replaced) SOP Instance UID.

``manifest.csv`` has the columns ``path,label,patient_id``: paths relative to the manifest, the
patient pseudonym (so ``data import`` splits by patient), and the value of the label ``label``
attached to the instance, else to its study; rows without it get ``unlabelled``
(``labelled_only=True`` leaves them out instead). Without ``label``, the only label name in the
store is used. The export is written to a temporary folder beside ``out`` and renamed into place
at the end: a failed export leaves nothing. One ``export`` audit event records it.
"""

from __future__ import annotations

import csv
import io
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medsight.errors import BadInputError
from medsight.store import audit
from medsight.store.records import InstanceRecord

if TYPE_CHECKING:
    from medsight.store.store import Store
    from medsight.store.users import User

FORMATS = {"dicom": ".dcm", "nifti": ".nii.gz", "png": ".png"}
UNLABELLED = "unlabelled"


@dataclass
class ExportReport:
    out: Path
    manifest: Path
    exported: int
    excluded_flagged: int
    unlabelled: int
    label: str | None

    def summary(self) -> str:
        return (
            f"exported {self.exported} instance(s) to {self.out} (manifest {self.manifest.name}, "
            f"label {self.label or 'none'}: {self.unlabelled} unlabelled); "
            f"{self.excluded_flagged} flagged instance(s) left out."
        )


def _selected(
    store: Store, modality: str | None, description: str | None
) -> Iterator[tuple[InstanceRecord, str, bool]]:
    """(instance, patient pseudonym, excluded) for each instance matching the filters."""
    for study in store.find_studies(modality=modality, description=description):
        for series in store.find_series(study.study_uid):
            if modality is not None and series.modality != modality:
                continue
            for record in store.find_instances(series.series_uid):
                yield record, study.patient_pseudonym, record.excluded


def _label_lookup(store: Store, label: str | None) -> tuple[str | None, dict[str, str]]:
    """The label name used and {sop_uid or study_uid: value}; instance labels win over study labels."""
    labels = store.labels()
    names = sorted({lb.name for lb in labels})
    if label is None:
        if len(names) > 1:
            raise BadInputError(
                f"the store has several label names ({', '.join(names)}); choose one with --label."
            )
        label = names[0] if names else None
    values: dict[str, str] = {}
    for lb in labels:
        if lb.name == label and lb.study_uid is not None:
            values[lb.study_uid] = lb.value
    for lb in labels:
        if lb.name == label and lb.sop_uid is not None:
            values[lb.sop_uid] = lb.value
    return label, values


def _pixels(data: bytes) -> tuple[np.ndarray, tuple[float, float] | None]:
    import pydicom
    from pydicom.pixels import apply_rescale

    from medsight.io.codecs import register_decoders

    register_decoders()  # 12-bit JPEG Extended (GDCM) besides pydicom's own decoders
    ds = pydicom.dcmread(io.BytesIO(data))
    pixels = apply_rescale(ds.pixel_array, ds).astype(np.float32)
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        pixels = pixels.max() + pixels.min() - pixels
    spacing = ds.get("PixelSpacing")
    return pixels, (float(spacing[0]), float(spacing[1])) if spacing else None


def _write(path: Path, data: bytes, fmt: str, frames: int | None) -> None:
    if fmt == "dicom":
        path.write_bytes(data)
        return
    pixels, spacing = _pixels(data)
    multi = (frames or 1) > 1
    colour = pixels.ndim == (4 if multi else 3)
    if fmt == "png":
        from PIL import Image

        if multi:
            pixels = pixels[len(pixels) // 2]
        low, high = float(pixels.min()), float(pixels.max())
        scale = 255.0 if colour else 65535.0
        scaled = (pixels - low) / (high - low) * scale if high > low else np.zeros_like(pixels)
        dtype = np.uint8 if colour else np.uint16
        Image.fromarray(np.rint(scaled).astype(dtype)).save(path)
        return
    import nibabel as nib

    if colour and multi:
        pixels, colour = pixels.mean(-1), False  # a colour cine as a grey volume
    if colour:  # (rows, cols, 3) -> (x, y, 1, channels), the NIfTI layout of a 2D colour image
        volume = np.transpose(pixels, (1, 0, 2))[:, :, None, :]
    else:  # (frames, rows, cols) -> (x = cols, y = rows, z = frames); one frame -> (x, y)
        volume = np.transpose(pixels, (2, 1, 0)) if multi else pixels.T
    affine = np.eye(4)
    if spacing:
        affine[0, 0], affine[1, 1] = spacing[1], spacing[0]
    nib.save(nib.Nifti1Image(np.ascontiguousarray(volume), affine), str(path))


def _staging(out: Path) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BadInputError(f"{out} already exists and is not empty; choose a new folder for the export.")
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))


def export_dataset(
    store: Store,
    out: Path,
    *,
    fmt: str = "dicom",
    modality: str | None = None,
    study_description: str | None = None,
    label: str | None = None,
    labelled_only: bool = False,
    user: User | str | None = None,
    client: str | None = None,
) -> ExportReport:
    """Write the selected, unflagged instances and ``manifest.csv`` into the new folder ``out``."""
    if fmt not in FORMATS:
        raise BadInputError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}.")
    label, values = _label_lookup(store, label)
    staging = _staging(out)
    rows: list[tuple[str, str, str]] = []
    excluded = unlabelled = 0
    try:
        (staging / "images").mkdir()
        for record, patient, is_excluded in _selected(store, modality, study_description):
            if is_excluded:
                excluded += 1
                continue
            value = values.get(record.sop_uid) or values.get(record.study_uid)
            if value is None and labelled_only:
                continue
            unlabelled += value is None
            relative = f"images/{record.sop_uid}{FORMATS[fmt]}"
            _write(staging / relative, store.blobs.get(record.sha), fmt, record.frames)
            rows.append((relative, value or UNLABELLED, patient))
        if not rows:
            raise BadInputError("no instance matches the filters (flagged instances are never exported).")
        with open(staging / "manifest.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label", "patient_id"])
            writer.writerows(rows)
        if out.exists():
            out.rmdir()  # checked empty above
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    detail = {"format": fmt, "count": len(rows), "excluded_flagged": excluded, "label": label}
    if modality:
        detail["modality"] = modality
    audit.record(store, "export", "dataset", out.name, user, client, detail=detail)
    return ExportReport(out, out / "manifest.csv", len(rows), excluded, unlabelled, label)
