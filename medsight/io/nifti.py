"""Volumes to and from NIfTI files (nibabel), geometry included.

NIfTI keeps the data as ``(x, y, z[, t])`` and an affine to RAS+ millimetres, which is exactly a
``Volume``'s affine; only the array's axes are reversed on the way in and out. Both the sform and the
qform are written (code 1, scanner coordinates): tools that read either find the same geometry.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medsight.errors import BadInputError
from medsight.io.volume import Volume, orthogonal

INT16 = np.iinfo(np.int16)


def to_nifti_image(volume: Volume):  # noqa: ANN201 - nibabel's Nifti1Image
    """The volume as an in-memory ``nibabel.Nifti1Image`` (int16 when that is lossless, else float32)."""
    import nibabel as nib

    data = np.ascontiguousarray(volume.array.transpose(2, 1, 0))
    whole = np.array_equal(data, np.rint(data))
    if data.size and whole and data.min() >= INT16.min and data.max() <= INT16.max:
        data = data.astype(np.int16)  # CT in Hounsfield units: half the bytes, nothing lost
    image = nib.Nifti1Image(data, volume.affine)
    image.header.set_xyzt_units("mm", "sec")
    image.set_sform(volume.affine, code=1)
    if orthogonal(volume.affine):  # a qform can hold rotations and zooms, never a shear
        image.set_qform(volume.affine, code=1)
    return image


def write_nifti(volume: Volume, path: str | Path) -> Path:
    """Write ``volume`` to ``path`` (``.nii`` or ``.nii.gz``); the file appears whole or not at all."""
    import nibabel as nib

    path = Path(path)
    if not (path.name.endswith(".nii") or path.name.endswith(".nii.gz")):
        raise BadInputError(f"{path}: a NIfTI file's name ends in .nii or .nii.gz.")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial{''.join(path.suffixes[-2:])}")
    try:
        nib.save(to_nifti_image(volume), str(partial))
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def read_nifti(path: str | Path, volume_index: int | None = None) -> Volume:
    """A 3D NIfTI file as a ``Volume``; of a 4D file, the volume ``volume_index`` (0-based)."""
    import nibabel as nib

    path = Path(path)
    try:
        image = nib.load(str(path))
    except Exception as err:  # nibabel's own types for damaged files
        raise BadInputError(f"{path}: not a readable NIfTI file ({type(err).__name__}: {err}).") from err
    shape = image.shape
    if len(shape) == 4 and shape[3] == 1:
        volume_index = 0
    if len(shape) == 4:
        if volume_index is None or not 0 <= volume_index < shape[3]:
            raise BadInputError(
                f"{path}: a 4D file of {shape[3]} volumes; choose one with a volume index 0..{shape[3] - 1}."
            )
        data = np.asarray(image.dataobj[..., volume_index], dtype=np.float32)
    elif len(shape) == 3:
        data = np.asarray(image.dataobj, dtype=np.float32)
    else:
        raise BadInputError(f"{path}: a NIfTI image of shape {shape}; expected a 3D volume.")
    return Volume(np.ascontiguousarray(data.transpose(2, 1, 0)), image.affine, {"format": "nifti"})
