"""One in-memory form for every labelled image data set, whatever its source.

Images are channel-first, ``(N, C, H, W)`` in 2D or ``(N, C, D, H, W)`` in 3D, kept in their
stored dtype (uint8 for MedMNIST) until preprocessing; labels are class indices ``(N,)``.

Two optional extras (``medsight/data/tabular.py``): ``tabular`` features ``(N, F)`` per split (age,
sex, a lab value, already encoded with the training split's statistics; ``tabular_spec`` says how),
and several labels per image (``heads``: label name -> classes; labels are then ``(N, T)``, and
``classes`` are the first head's, which also stratifies splits and sets the class balance defaults).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medsight.data.tabular import TabularSpec

SPLITS = ("train", "val", "test")


@dataclass
class Split:
    images: np.ndarray
    labels: np.ndarray
    patient_ids: np.ndarray | None = None
    tabular: np.ndarray | None = None  # (N, F) float32 features, see ImageDataset.tabular_spec

    def __len__(self) -> int:
        return len(self.labels)

    def label_counts(self, n_classes: int, head: int = 0) -> list[int]:
        labels = self.labels if self.labels.ndim == 1 else self.labels[:, head]
        return np.bincount(labels, minlength=n_classes).astype(int).tolist()


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
    tabular_spec: TabularSpec | None = None
    heads: dict[str, list[str]] | None = None  # several labels per image: name -> classes, in label order

    @property
    def tabular_names(self) -> list[str]:
        return self.tabular_spec.names if self.tabular_spec is not None else []

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
        info = dataset_summary(self, lambda split: split.label_counts(self.n_classes))
        if self.tabular_spec is not None:
            info["tabular"] = self.tabular_names
        if self.heads:
            info["heads"] = {
                head: {
                    "classes": list(classes),
                    "label_counts": {n: s.label_counts(len(classes), k) for n, s in self.splits.items()},
                }
                for k, (head, classes) in enumerate(self.heads.items())
            }
        return info


def dataset_summary(dataset: Any, label_counts: Callable[[Any], Any]) -> dict[str, Any]:
    """The summary every kind of data set prints (``medsight data info``, reports).

    What it is and where it came from, its shape and classes, and per split its size and
    ``label_counts(split)`` (class counts for classification, the foreground share for segmentation).
    """
    return {
        "name": dataset.name,
        "source": dataset.source,
        "modality": dataset.modality,
        "spatial_dims": dataset.spatial_dims,
        "image_shape": list(dataset.image_shape),
        "channels": dataset.channels,
        "classes": list(dataset.classes),
        "splits": {
            name: {"size": len(split), "label_counts": label_counts(split)}
            for name, split in dataset.splits.items()
        },
        "licence": dataset.licence,
        "citation": dataset.citation,
    }
