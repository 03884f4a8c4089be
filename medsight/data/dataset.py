"""One in-memory form for every labelled image data set, whatever its source.

Images are channel-first, ``(N, C, H, W)`` in 2D or ``(N, C, D, H, W)`` in 3D, kept in their
stored dtype (uint8 for MedMNIST) until preprocessing; labels are class indices ``(N,)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

SPLITS = ("train", "val", "test")


@dataclass
class Split:
    images: np.ndarray
    labels: np.ndarray
    patient_ids: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def label_counts(self, n_classes: int) -> list[int]:
        return np.bincount(self.labels, minlength=n_classes).astype(int).tolist()


@dataclass
class ImageDataset:
    name: str
    classes: list[str]
    spatial_dims: int
    modality: str
    splits: dict[str, Split]
    source: str
    licence: str | None = None
    citation: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.splits["train"].images.shape[1])

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.splits["train"].images.shape[2:])

    def info(self) -> dict[str, Any]:
        """A printable summary: sizes, classes, label counts per split, image shape."""
        return {
            "name": self.name,
            "source": self.source,
            "modality": self.modality,
            "spatial_dims": self.spatial_dims,
            "image_shape": list(self.image_shape),
            "channels": self.channels,
            "classes": list(self.classes),
            "splits": {
                name: {"size": len(split), "label_counts": split.label_counts(self.n_classes)}
                for name, split in self.splits.items()
            },
            "licence": self.licence,
            "citation": self.citation,
        }
