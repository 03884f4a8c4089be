"""Patch sampling and augmentation for segmentation training, from MONAI dictionary transforms.

Large images train on random patches: a share of the patch centres lies on the structure (so thin
vessels or small lesions are seen often enough), the rest anywhere inside the region of interest
(never in the black surround outside a field of view). Each training target is two channels, the
label and the region of interest: spatial augmentation moves both, and pixels it pads in get a zero
ROI, so the loss ignores them exactly as it ignores pixels outside the field of view.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from monai.transforms import (
    Compose,
    Rand2DElasticd,
    RandAdjustContrastd,
    RandAffined,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    SpatialPad,
)

from medsight.data.transforms import AUGMENT_LEVELS, ORIENTED
from medsight.errors import ConfigError

MAX_INDICES = 200_000  # sampled centre candidates kept per image and kind (bounds memory on volumes)


def training_target(mask: np.ndarray, roi: np.ndarray | None) -> torch.Tensor:
    """(2, *spatial) uint8: channel 0 the label, channel 1 the region of interest (all ones without one)."""
    region = np.ones_like(mask) if roi is None else (roi > 0).astype(np.uint8)
    return torch.from_numpy(np.stack([mask * region, region]).astype(np.uint8))


def pad_to_patch(
    image: torch.Tensor, target: torch.Tensor, patch: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images smaller than a patch are padded (with an ROI of zero there, so the padding never counts)."""
    if all(s >= p for s, p in zip(image.shape[1:], patch, strict=True)):
        return image, target
    pad = SpatialPad(spatial_size=patch, mode="constant")
    return torch.as_tensor(pad(image)), torch.as_tensor(pad(target))


def centre_candidates(target: torch.Tensor, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of structure pixels and of other in-ROI pixels (each subsampled to MAX_INDICES)."""
    label, roi = target[0].numpy().ravel(), target[1].numpy().ravel()
    foreground = np.flatnonzero(label > 0)
    background = np.flatnonzero((label == 0) & (roi > 0))
    keep = [
        idx if idx.size <= MAX_INDICES else np.sort(rng.choice(idx, MAX_INDICES, replace=False))
        for idx in (foreground, background)
    ]
    return keep[0], keep[1]


def patch_crop(patch: list[int], foreground_fraction: float) -> RandCropByPosNegLabeld:
    """One patch per call, centred on the structure with probability ``foreground_fraction``."""
    return RandCropByPosNegLabeld(
        keys=["image", "target"],
        label_key="target",
        spatial_size=patch,
        pos=foreground_fraction,
        neg=1 - foreground_fraction,
        num_samples=1,
        fg_indices_key="fg",
        bg_indices_key="bg",
    )


def segmentation_augmentation(modality: str, spatial_dims: int, level: str) -> list:
    """Random spatial and intensity changes of a patch and its target, by modality and level."""
    if level not in AUGMENT_LEVELS:
        raise ConfigError(f"unknown augmentation level '{level}'; choose one of {', '.join(AUGMENT_LEVELS)}.")
    if level == "none":
        return []
    strength = {"light": 0.5, "standard": 1.0, "strong": 1.5}[level]
    keys, both = ["image"], ["image", "target"]
    steps: list = []
    free = modality not in ORIENTED  # vessels, cells, tissue: no side or turn is special
    if free:
        steps += [RandFlipd(both, prob=0.5, spatial_axis=axis) for axis in range(spatial_dims)]
        if spatial_dims == 2:
            steps.append(RandRotate90d(both, prob=0.5))
    angle = math.radians(30 if free else 10) * strength
    steps.append(
        RandAffined(
            both,
            prob=0.5,
            rotate_range=(angle,) if spatial_dims == 2 else (angle,) * 3,
            scale_range=(0.15 * strength,) * spatial_dims,
            mode=("bilinear", "nearest"),
            padding_mode="zeros",  # padded pixels get ROI 0: ignored by the loss
        )
    )
    if level == "strong" and spatial_dims == 2:
        steps.append(
            Rand2DElasticd(
                both, prob=0.2, spacing=(16, 16), magnitude_range=(1, 2), mode=("bilinear", "nearest")
            )
        )
    steps += [
        RandScaleIntensityd(keys, prob=0.3, factors=0.15 * strength),
        RandShiftIntensityd(keys, prob=0.3, offsets=0.1 * strength),
        RandAdjustContrastd(keys, prob=0.3, gamma=(1 - 0.25 * strength, 1 + 0.3 * strength)),
        RandGaussianNoised(keys, prob=0.15, std=0.05 * strength),
        RandGaussianSmoothd(keys, prob=0.1, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0)),
    ]
    return steps


def _plain(value: torch.Tensor) -> torch.Tensor:
    return value.as_tensor() if hasattr(value, "as_tensor") else torch.as_tensor(value)


class PatchSampler(torch.utils.data.Dataset):
    """``length`` random (patch, target) pairs drawn from whole prepared images, augmented.

    The draw comes from ``transform``'s random state (``set_random_state``), so an epoch is
    reproducible; item ``i`` is taken from image ``i % n`` so every image gets its share.
    """

    def __init__(
        self,
        images: list[torch.Tensor],
        targets: list[torch.Tensor],
        candidates: list[tuple[np.ndarray, np.ndarray]],
        length: int,
        transform: Compose,
    ) -> None:
        self.images, self.targets, self.candidates = images, targets, candidates
        self.length, self.transform = length, transform

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        k = index % len(self.images)
        fg, bg = self.candidates[k]
        item = {"image": self.images[k], "target": self.targets[k], "fg": fg, "bg": bg}
        out = self.transform(item)
        out = out[0] if isinstance(out, list) else out
        return _plain(out["image"]).float(), _plain(out["target"]).round().to(torch.uint8)
