"""A model's input: one image tensor, or ``{"image": ..., "tabular": ...}`` for a fusion model.

The training loop, inference, test-time augmentation and export move, slice and flip batches
through these few helpers, so the plain-tensor path stays exactly what it was and a structured
batch takes the same road. Test-time flips touch the image only: tabular features have no axes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

ModelInput = torch.Tensor | dict[str, torch.Tensor]


def to_device(inputs: Any, device: torch.device) -> Any:
    if isinstance(inputs, dict):
        return {key: value.to(device) for key, value in inputs.items()}
    return inputs.to(device)


def batch_length(inputs: Any) -> int:
    return len(inputs["image"]) if isinstance(inputs, dict) else len(inputs)


def take(inputs: Any, index: Any) -> Any:
    """Rows ``index`` (a slice, indices or a mask) of a tensor, an array or a dict of them."""
    if isinstance(inputs, dict):
        return {key: value[index] for key, value in inputs.items()}
    return inputs[index]


def image_of(inputs: Any) -> Any:
    return inputs["image"] if isinstance(inputs, dict) else inputs


def with_image(inputs: Any, image: Any) -> Any:
    """``inputs`` with its image replaced (e.g. flipped), the tabular part unchanged."""
    return {**inputs, "image": image} if isinstance(inputs, dict) else image


def model_input(image: Any, tabular: np.ndarray | torch.Tensor | None) -> Any:
    """The image alone, or the dict a fusion model takes when there are tabular features."""
    if tabular is None:
        return image
    if isinstance(image, torch.Tensor):
        tabular = torch.as_tensor(np.asarray(tabular, dtype=np.float32))
    return {"image": image, "tabular": tabular}


class Rows:
    """Row-aligned tensors by name that move, measure and slice like one tensor.

    For code written for a single input tensor (BatchNorm re-estimation after weight averaging):
    ``rows.to(device)``, ``len(rows)`` and ``rows[a:b]`` (a dict a fusion model takes) all work.
    """

    def __init__(self, parts: dict[str, torch.Tensor]) -> None:
        self.parts = parts

    def to(self, device: torch.device) -> Rows:
        return Rows(to_device(self.parts, device))

    def __len__(self) -> int:
        return batch_length(self.parts)

    def __getitem__(self, index: Any) -> dict[str, torch.Tensor]:
        return take(self.parts, index)
