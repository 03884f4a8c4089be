"""Turn stored images into network inputs, the same way in training, evaluation and serving.

``InputSpec`` records every choice (size, intensity preset, denoising, channels, the training
split's mean and sd); it travels inside the checkpoint, so a served model prepares a new image
exactly as its training images were prepared.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel

from medsight.data.transforms import preprocess_images


class InputSpec(BaseModel):
    spatial_dims: int
    channels: int
    image_size: int
    intensity: str
    denoise: str = "none"
    mean: list[float]
    std: list[float]
    source_dtype: str = "uint8"


def prepare_images(images: np.ndarray, spec: InputSpec) -> torch.Tensor:
    """(N, C, *spatial) stored images -> standardised float32 network inputs."""
    if images.dtype != np.dtype(spec.source_dtype) and spec.intensity == "scale":
        # "scale" maps the stored type's range; new images are brought to the training images' type first
        images = (
            np.clip(images, 0, np.iinfo(spec.source_dtype).max).astype(spec.source_dtype)
            if np.issubdtype(np.dtype(spec.source_dtype), np.integer)
            else images.astype(spec.source_dtype)
        )
    tensor = preprocess_images(
        images, intensity=spec.intensity, size=spec.image_size, channels=spec.channels, denoise=spec.denoise
    )
    shape = (1, -1) + (1,) * spec.spatial_dims
    mean = torch.tensor(spec.mean).view(shape)
    std = torch.tensor(spec.std).view(shape)
    return (tensor - mean) / std
