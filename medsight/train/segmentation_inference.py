"""Segmentation inputs and inference: the same preparation in training, evaluation and serving.

``SegmentationSpec`` records how an image becomes network input (intensity normalisation, patch
size, sliding-window overlap); it travels in the checkpoint's ``inference`` block. Whole images are
segmented by MONAI's ``sliding_window_inference`` over patches of the training size, blended with a
Gaussian weight (as nnU-Net does), so any image size works and memory stays bounded.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from medsight.errors import BadInputError
from medsight.models import build_model
from medsight.train.run_folder import require_run

IntensityMode = Literal["image-zscore", "local-zscore", "dataset-zscore"]


class SegmentationSpec(BaseModel):
    spatial_dims: int
    channels: int
    patch_size: list[int]
    intensity: IntensityMode = "image-zscore"
    # dataset-zscore (CT): clip to the training foreground's percentiles, then one mean and sd
    clip: list[float] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    local_sigma: float | None = None  # local-zscore: Gaussian neighbourhood, in pixels
    overlap: float = 0.5
    window_batch: int = 16


def prepare_image(image: np.ndarray, roi: np.ndarray | None, spec: SegmentationSpec) -> torch.Tensor:
    """(C, *spatial) stored image -> float32 network input.

    ``image-zscore`` standardises each channel with the image's own mean and sd inside the region of
    interest (the whole image without one): fundus photos and MR differ in brightness from image to
    image, and the black surround outside a field of view would otherwise dominate the statistics
    (nnU-Net normalises inside the non-zero region for the same reason).
    """
    if image.ndim - 1 != spec.spatial_dims or image.shape[0] != spec.channels:
        raise BadInputError(
            f"the model expects {spec.channels}-channel {spec.spatial_dims}D images, got an array of shape "
            f"{tuple(image.shape)} (channels first)."
        )
    array = image.astype(np.float32)
    if spec.intensity == "dataset-zscore":
        low, high = spec.clip or (float(array.min()), float(array.max()))
        mean = np.array(spec.mean, dtype=np.float32).reshape(-1, *([1] * spec.spatial_dims))
        std = np.array(spec.std, dtype=np.float32).reshape(-1, *([1] * spec.spatial_dims))
        return torch.from_numpy((np.clip(array, low, high) - mean) / std)
    if spec.intensity == "local-zscore":
        return torch.from_numpy(local_zscore(array, roi, spec.local_sigma or 8.0))
    inside = array[:, roi > 0] if roi is not None else array.reshape(array.shape[0], -1)
    mean = inside.mean(axis=1).reshape(-1, *([1] * spec.spatial_dims))
    std = np.maximum(inside.std(axis=1), 1e-6).reshape(-1, *([1] * spec.spatial_dims))
    return torch.from_numpy((array - mean) / std)


def local_zscore(array: np.ndarray, roi: np.ndarray | None, sigma: float) -> np.ndarray:
    """Each pixel standardised by the mean and sd of its Gaussian neighbourhood inside the ROI.

    Photographs (fundus, skin, endoscopy) are lit unevenly: the centre is bright, the rim dark. A
    local standardisation removes the slow illumination and keeps the fine contrast (vessels,
    edges), much as CLAHE does for the green channel in classic retinal work. Weighting by the ROI
    (normalised convolution) keeps the black surround from darkening the rim; outside it is 0.
    """
    from scipy.ndimage import gaussian_filter

    weight = np.ones(array.shape[1:], np.float32) if roi is None else (roi > 0).astype(np.float32)
    norm = gaussian_filter(weight, sigma) + 1e-6
    out = np.empty_like(array)
    for c, channel in enumerate(array):
        centred = channel - gaussian_filter(channel * weight, sigma) / norm
        spread = np.sqrt(gaussian_filter(centred**2 * weight, sigma) / norm)
        floor = max(float(np.median(spread[weight > 0])) * 0.1, 1e-3)  # flat areas: no noise blow-up
        out[c] = np.clip(centred / np.maximum(spread, floor), -6, 6) * weight
    return out


@torch.no_grad()
def sliding_window_logits(
    model: nn.Module, image: torch.Tensor, spec: SegmentationSpec, device: torch.device
) -> torch.Tensor:
    """(C, *spatial) prepared image -> (K, *spatial) logits, by overlapping patches."""
    from monai.inferers import sliding_window_inference

    model.eval()
    logits = sliding_window_inference(
        image[None].to(device),
        roi_size=spec.patch_size,
        sw_batch_size=spec.window_batch,
        predictor=model,
        overlap=spec.overlap,
        mode="gaussian",
    )
    return torch.as_tensor(logits)[0].cpu()


def foreground_probability(
    model: nn.Module,
    image: torch.Tensor,
    spec: SegmentationSpec,
    device: torch.device,
    flips: list[list[int]] | None = None,
) -> np.ndarray:
    """(C, *spatial) prepared image -> (*spatial) probability of the structure (class 1).

    ``flips`` (axes of the image, 1 = first spatial axis) add mirrored passes whose probabilities
    are flipped back and averaged: test-time augmentation, as nnU-Net mirrors.
    """
    probs = torch.softmax(sliding_window_logits(model, image, spec, device), dim=0)[1]
    for dims in flips or []:
        flipped = sliding_window_logits(model, torch.flip(image, dims), spec, device)
        probs += torch.flip(torch.softmax(flipped, dim=0)[1], [d - 1 for d in dims])
    return (probs / (1 + len(flips or []))).numpy()


def tta_flips(info: dict[str, Any], spatial_dims: int) -> list[list[int]]:
    """Every combination of mirrored axes, unless the run trained without TTA or anatomy has a side."""
    from medsight.data.transforms import ORIENTED
    from medsight.train.inference import flip_combinations

    if not info.get("tta") or info.get("modality", "unknown") in ORIENTED:
        return []
    return flip_combinations(list(range(1, 1 + spatial_dims)))


@dataclass
class Segmenter:
    """A trained segmentation model with everything needed to segment a new image."""

    model: nn.Module
    spec: SegmentationSpec
    threshold: float
    info: dict[str, Any]
    device: torch.device = torch.device("cpu")

    def probabilities(self, image: np.ndarray, roi: np.ndarray | None = None) -> np.ndarray:
        """Stored image (C, *spatial) -> probability map (*spatial); 0 outside ``roi`` when given."""
        flips = tta_flips(self.info, self.spec.spatial_dims)
        probs = foreground_probability(
            self.model, prepare_image(image, roi, self.spec), self.spec, self.device, flips
        )
        return probs if roi is None else np.where(roi > 0, probs, 0.0)

    def mask(self, image: np.ndarray, roi: np.ndarray | None = None) -> np.ndarray:
        """Stored image -> binary mask (uint8) at the threshold chosen on validation."""
        return (self.probabilities(image, roi) >= self.threshold).astype(np.uint8)


def build_segmentation_model(info: dict[str, Any]) -> nn.Module:
    spec = SegmentationSpec(**info["input"])
    return build_model(
        info["model"], spec.spatial_dims, spec.channels, len(info["classes"]), **info["model_options"]
    )


def load_segmenter(run_dir: Path, load: Callable[[Path], dict] | None = None) -> Segmenter:
    """The best model of a segmentation run folder, ready for ``probabilities`` / ``mask``."""
    from medsight.train.inference import load_checkpoint

    run_dir = require_run(Path(run_dir), "checkpoint.pt")
    checkpoint = (load or load_checkpoint)(run_dir / "checkpoint.pt")
    info = checkpoint.get("inference") or {}
    if info.get("task") != "segmentation":
        raise BadInputError(
            f"{run_dir} holds a {info.get('task', 'classification')} model, not a segmentation one."
        )
    if not checkpoint.get("best_state"):
        raise BadInputError(f"{run_dir}/checkpoint.pt holds no trained model yet; finish training first.")
    model = build_segmentation_model(info)
    model.load_state_dict(checkpoint["best_state"])
    model.eval()
    return Segmenter(model, SegmentationSpec(**info["input"]), _threshold(run_dir), info)


def _threshold(run_dir: Path) -> float:
    """The threshold chosen on validation by the run's evaluation; 0.5 (argmax) before it."""
    try:
        value = json.loads((run_dir / "metrics.json").read_text()).get("threshold")
    except (FileNotFoundError, json.JSONDecodeError):
        value = None
    return 0.5 if value is None else float(value)
