"""A 3D volume with its place in the patient: the array, and the affine that maps voxels to millimetres.

Conventions (the NIfTI ones, so that a volume goes to and from ``.nii.gz`` without re-thinking):

- ``array`` is ``(slices, rows, columns)`` = ``(z, y, x)``: ``array[k]`` is slice ``k`` as a viewer shows
  it, the same layout as a ``MedicalImage``'s ``(C, D, H, W)`` without the channel.
- ``affine`` maps a voxel index ``(x, y, z)`` = ``(column, row, slice)`` - the array's axes reversed -
  to **RAS+** millimetres: x grows toward the patient's Right, y toward Anterior, z toward Superior.

DICOM's patient coordinates are LPS+ (x toward the Left, y toward Posterior, z toward Superior): the
two differ by the sign of x and y, and ``LPS_TO_RAS`` turns one into the other (it is its own inverse).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medsight.errors import BadInputError
from medsight.io.images import MedicalImage

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # its own inverse: RAS_TO_LPS is the same matrix


@dataclass
class Volume:
    array: np.ndarray  # (z, y, x) = (slices, rows, columns), float32
    affine: np.ndarray  # 4x4: voxel (x, y, z) -> RAS millimetres
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array, dtype=np.float32)
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.array.ndim != 3 or self.affine.shape != (4, 4):
            raise BadInputError(
                f"a volume needs a 3D array and a 4x4 affine, got {self.array.shape} and {self.affine.shape}."
            )

    @property
    def shape_xyz(self) -> tuple[int, int, int]:
        z, y, x = self.array.shape
        return x, y, z

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along x (columns), y (rows), z (slices)."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def origin(self) -> np.ndarray:
        """RAS position (mm) of the centre of voxel (0, 0, 0)."""
        return self.affine[:3, 3].copy()

    @property
    def direction(self) -> np.ndarray:
        """3x3, columns = unit RAS directions of the x, y and z voxel axes."""
        return self.affine[:3, :3] / np.asarray(self.spacing)

    @property
    def corrections(self) -> list[str]:
        """What was changed to make the volume regular (gantry tilt, uneven spacing, ...), in words."""
        return list(self.metadata.get("corrections", []))

    def world(self, index_xyz: np.ndarray | tuple[float, float, float]) -> np.ndarray:
        """RAS millimetres of voxel index (x, y, z) (or an (N, 3) array of them)."""
        index = np.asarray(index_xyz, dtype=np.float64)
        return index @ self.affine[:3, :3].T + self.affine[:3, 3]

    def index(self, ras: np.ndarray | tuple[float, float, float]) -> np.ndarray:
        """Voxel index (x, y, z), fractional, of RAS point(s): the inverse of ``world``."""
        inverse = np.linalg.inv(self.affine)
        points = np.asarray(ras, dtype=np.float64)
        return points @ inverse[:3, :3].T + inverse[:3, 3]

    def to_image(self) -> MedicalImage:
        """The ``MedicalImage`` form (1, D, H, W) with spacing in array order (z, y, x)."""
        metadata = {**self.metadata, "affine": self.affine.round(6).tolist()}
        return MedicalImage(self.array[None], tuple(self.spacing[::-1]), metadata)


def orthogonal(affine: np.ndarray, tolerance: float = 1e-4) -> bool:
    """Whether the voxel axes are at right angles (no shear): what NIfTI's qform and ITK can hold."""
    unit = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    return bool(np.allclose(unit.T @ unit, np.eye(3), atol=tolerance))


def window(volume: Volume, level: float, width: float) -> Volume:
    """Values mapped linearly from [level - width/2, level + width/2] onto [0, 1], clipped.

    The named CT windows (brain, bone, lung ...) live in ``medsight.data.transforms.CT_WINDOWS``.
    """
    if width <= 0:
        raise BadInputError(f"a window's width must be positive, not {width}.")
    low = level - width / 2
    array = np.clip((volume.array - low) / width, 0.0, 1.0)
    return Volume(array, volume.affine.copy(), dict(volume.metadata))


def resample(volume: Volume, spacing: tuple[float, float, float], order: int = 1) -> Volume:
    """The volume on a grid of ``spacing`` (x, y, z) mm with the same directions and first voxel.

    Linear (``order=1``) or nearest-neighbour (``order=0``, for label maps) interpolation, one axis at
    a time. Axes that get coarser are smoothed first (a Gaussian of sigma = half the shrink factor)
    so that thin structures do not alias into noise.
    """
    from scipy.ndimage import gaussian_filter

    new = np.asarray(spacing, dtype=np.float64)
    if new.shape != (3,) or not np.all(np.isfinite(new)) or np.any(new <= 0):
        raise BadInputError(f"spacing must be three positive numbers (x, y, z in mm), not {spacing}.")
    if order not in (0, 1):
        raise BadInputError(f"interpolation order must be 0 (nearest) or 1 (linear), not {order}.")
    old = np.asarray(volume.spacing)
    factor = new / old  # > 1: coarser
    counts_xyz = np.floor((np.asarray(volume.shape_xyz) - 1) / factor + 1e-6).astype(int) + 1
    array = volume.array
    sigma_zyx = np.maximum(0.0, (factor[::-1] - 1) / 2)
    if order == 1 and np.any(sigma_zyx > 0):
        array = gaussian_filter(array, sigma=sigma_zyx, mode="nearest")
    for axis, (count, step) in enumerate(zip(counts_xyz[::-1], factor[::-1], strict=True)):
        array = sample_axis(array, np.arange(count) * step, axis, order)
    affine = volume.affine.copy()
    affine[:3, :3] = volume.affine[:3, :3] * factor  # each column scaled by its axis' factor
    done = f"resampled from {_mm(old)} to {_mm(new)} mm voxels (x, y, z)"
    metadata = {**volume.metadata, "corrections": [*volume.corrections, done]}
    return Volume(array, affine, metadata)


def sample_axis(array: np.ndarray, positions: np.ndarray, axis: int, order: int = 1) -> np.ndarray:
    """``array`` sampled at fractional ``positions`` along ``axis`` (clamped to the ends)."""
    top = array.shape[axis] - 1
    positions = np.clip(np.asarray(positions, dtype=np.float64), 0, top)
    if order == 0:
        return np.take(array, np.rint(positions).astype(int), axis=axis)
    low = np.floor(positions).astype(int)
    high = np.minimum(low + 1, top)
    shape = [1] * array.ndim
    shape[axis] = len(positions)
    weight = (positions - low).reshape(shape).astype(np.float32)
    return np.take(array, low, axis=axis) * (1 - weight) + np.take(array, high, axis=axis) * weight


def canonical(volume: Volume) -> Volume:
    """The same voxels flipped and transposed so that x, y, z run closest to R, A, S (no interpolation)."""
    import nibabel as nib

    image = nib.Nifti1Image(np.ascontiguousarray(volume.array.transpose(2, 1, 0)), volume.affine)
    turned = nib.as_closest_canonical(image)
    data = np.asarray(turned.dataobj, dtype=np.float32).transpose(2, 1, 0)
    return Volume(np.ascontiguousarray(data), turned.affine, dict(volume.metadata))


def _mm(values: np.ndarray) -> str:
    return " x ".join(f"{v:.3g}" for v in values)
