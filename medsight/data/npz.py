"""Read image data sets stored as ``.npz`` files in the MedMNIST layout.

The layout: ``{train,val,test}_images`` and ``{train,val,test}_labels`` arrays. Images are
``(N, H, W)`` grey, ``(N, H, W, C)`` colour (C in 1 or 3), ``(N, D, H, W)`` volumes or
``(N, D, H, W, C)``; labels ``(N,)`` or ``(N, 1)`` class indices.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from medsight.data.dataset import SPLITS, ImageDataset, Split
from medsight.errors import BadInputError


def read_npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """All arrays of an npz file, or a BadInputError that names the file and what is wrong."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except FileNotFoundError as err:
        raise BadInputError(f"{path}: no such file.") from err
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, KeyError) as err:
        raise BadInputError(
            f"{path}: not a readable .npz file ({type(err).__name__}: {err}). "
            "Re-download it or re-create it with numpy.savez."
        ) from err


def channel_first(images: np.ndarray, spatial_dims: int | None, path: Path) -> tuple[np.ndarray, int]:
    """Move the channel axis first: returns (images as (N, C, *spatial), spatial_dims)."""
    if images.ndim == 3:
        return images[:, None], 2
    if images.ndim == 4:
        if spatial_dims == 3 or (spatial_dims is None and images.shape[-1] not in (1, 3)):
            return images[:, None], 3
        return np.moveaxis(images, -1, 1), 2
    if images.ndim == 5:
        return np.moveaxis(images, -1, 1), 3
    raise BadInputError(
        f"{path}: images have shape {images.shape}; expected (N, H, W), (N, H, W, C), (N, D, H, W) "
        "or (N, D, H, W, C)."
    )


def class_indices(labels: np.ndarray, key: str, path: Path) -> np.ndarray:
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise BadInputError(
            f"{path}: '{key}' has shape {labels.shape}: several labels per image (multi-label) are not "
            "supported yet; give one class index per image."
        )
    if not np.issubdtype(labels.dtype, np.integer) or (labels.size and labels.min() < 0):
        raise BadInputError(f"{path}: '{key}' must hold non-negative integer class indices.")
    return labels.astype(np.int64)


def load_npz_dataset(
    path: Path,
    name: str,
    *,
    classes: list[str] | None = None,
    spatial_dims: int | None = None,
    modality: str = "unknown",
    licence: str | None = None,
    citation: str | None = None,
) -> ImageDataset:
    arrays = read_npz_arrays(path)
    missing = [f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels") if f"{s}_{kind}" not in arrays]
    if missing:
        raise BadInputError(
            f"{path}: missing arrays {', '.join(missing)}; an npz in MedMNIST layout has "
            "train_/val_/test_ images and labels (found: " + ", ".join(sorted(arrays)) + ")."
        )
    splits: dict[str, Split] = {}
    dims = spatial_dims
    for split in SPLITS:
        images, dims = channel_first(arrays[f"{split}_images"], spatial_dims, path)
        labels = class_indices(arrays[f"{split}_labels"], f"{split}_labels", path)
        if len(images) != len(labels):
            raise BadInputError(
                f"{path}: {split}_images has {len(images)} images but {split}_labels has {len(labels)} labels."
            )
        splits[split] = Split(images, labels)
    shapes = {s.images.shape[1:] for s in splits.values()}
    if len(shapes) != 1:
        raise BadInputError(f"{path}: the splits' images differ in shape: {sorted(shapes)}.")
    n_classes = int(max(s.labels.max(initial=0) for s in splits.values())) + 1
    if classes is None:
        classes = [str(i) for i in range(n_classes)]
    elif n_classes > len(classes):
        raise BadInputError(
            f"{path}: labels go up to {n_classes - 1} but only {len(classes)} classes are named."
        )
    if len(classes) < 2:
        raise BadInputError(f"{path}: every label is 0; a classifier needs at least two classes.")
    return ImageDataset(
        name=name,
        classes=list(classes),
        spatial_dims=int(dims or 2),
        modality=modality,
        splits=splits,
        source=str(path),
        licence=licence,
        citation=citation,
    )
