"""Segmentation (2D, 3D): a mask per image, trained on patches, scored on validation by Dice.

Training draws random patches (a share centred on the structure), augments them with MONAI
dictionary transforms and fits Dice + cross-entropy, both restricted to the region of interest
(DRIVE's field of view): pixels outside it are neither rewarded nor punished. Validation segments
the whole validation images by sliding-window inference and reports the mean Dice inside the ROI.
Every open setting comes from the data (``segmentation_defaults.py``).
"""

from __future__ import annotations

import numpy as np
import torch
from monai.losses import MaskedDiceLoss
from monai.transforms import Compose
from torch import nn

from medsight.data.segmentation import SegmentationDataset
from medsight.data.segmentation_registry import load_segmentation_dataset
from medsight.data.segmentation_transforms import (
    PatchSampler,
    centre_candidates,
    pad_to_patch,
    patch_crop,
    segmentation_augmentation,
    training_target,
)
from medsight.models import build_model
from medsight.train.config import TrainConfig
from medsight.train.segmentation_defaults import SegmentationOptions, resolve_segmentation
from medsight.train.segmentation_inference import SegmentationSpec, prepare_image, sliding_window_logits

BATCHNORM_PATCHES = 64


class RegionDiceCE(nn.Module):
    """Dice (foreground, over the batch) + cross-entropy, both counted inside the region of interest.

    ``targets`` are (B, 2, *spatial): the label and the ROI (see ``training_target``). Batch Dice
    (nnU-Net's choice) stays stable when a patch holds little or no structure.
    """

    def __init__(self) -> None:
        super().__init__()
        self.dice = MaskedDiceLoss(include_background=False, to_onehot_y=True, softmax=True, batch=True)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        label, roi = targets[:, :1].long(), targets[:, 1:].float()
        ce = nn.functional.cross_entropy(logits, label[:, 0], reduction="none")
        ce = (ce * roi[:, 0]).sum() / roi.sum().clamp_min(1.0)
        return self.dice(logits, label, mask=roi) + ce


def dice_in_roi(predicted: np.ndarray, mask: np.ndarray, roi: np.ndarray | None) -> float:
    """Dice of two binary masks counted inside ``roi``; 1.0 when both are empty there."""
    inside = np.ones_like(mask, dtype=bool) if roi is None else roi > 0
    p, t = predicted[inside] > 0, mask[inside] > 0
    total = int(p.sum() + t.sum())
    return 1.0 if total == 0 else float(2 * np.sum(p & t) / total)


class SegmentationTask:
    """Patches in, masks out: the ``Task`` (``medsight/train/task.py``) the engine runs for segmentation."""

    kind = "segmentation"
    score_name = "Dice"

    def __init__(self, config: TrainConfig, dataset: SegmentationDataset) -> None:
        self.config, self.dataset, self.dataset_name = config, dataset, dataset.name
        self.options = SegmentationOptions(**config.task_options)
        self.spec = SegmentationSpec(
            spatial_dims=dataset.spatial_dims,
            channels=dataset.channels,
            patch_size=self.options.patch_size,
            intensity=self.options.intensity,
            clip=self.options.clip,
            local_sigma=self.options.local_sigma,
            mean=self.options.mean,
            std=self.options.std,
            overlap=self.options.overlap,
        )
        # validation after every epoch: less window overlap than the final evaluation, at half the cost
        self.val_spec = self.spec.model_copy(update={"overlap": min(self.spec.overlap, 0.25)})
        self.inputs = {name: self._prepare(split) for name, split in dataset.splits.items() if name != "test"}
        self.train_images, self.train_targets, self.candidates = self._training_arrays(config.seed)
        self.transform = Compose(
            [patch_crop(self.spec.patch_size, self.options.foreground_fraction)]
            + segmentation_augmentation(dataset.modality, dataset.spatial_dims, config.augment or "none")
        )
        self.loss_fn = RegionDiceCE()

    def _prepare(self, split) -> list[torch.Tensor]:
        return [prepare_image(i, r, self.spec) for i, r in zip(split.images, split.rois, strict=True)]

    def _training_arrays(self, seed: int):
        split, rng = self.dataset.splits["train"], np.random.default_rng(seed)
        images, targets, candidates = [], [], []
        for image, mask, roi in zip(self.inputs["train"], split.masks, split.rois, strict=True):
            image, target = pad_to_patch(image, training_target(mask, roi), self.spec.patch_size)
            images.append(image)
            targets.append(target)
            candidates.append(centre_candidates(target, rng))
        return images, targets, candidates

    def describe(self) -> str:
        shape = " × ".join(map(str, self.dataset.image_shape))
        patch = " × ".join(map(str, self.spec.patch_size))
        return (
            f"{len(self.train_images)} images ({shape}) as {self.options.patches_per_epoch} patches of "
            f"{patch} per epoch"
        )

    def train_set(self) -> torch.utils.data.Dataset:
        return PatchSampler(
            self.train_images,
            self.train_targets,
            self.candidates,
            self.options.patches_per_epoch,
            self.transform,
        )

    def reseed(self, seed: int) -> None:
        self.transform.set_random_state(seed=seed % 2**32)

    def build_model(self) -> nn.Module:
        d = self.dataset
        return build_model(
            self.config.model, d.spatial_dims, d.channels, len(d.classes), **self.config.model_options
        )

    def to(self, device: torch.device) -> None:
        self.loss_fn = self.loss_fn.to(device)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(outputs, targets)

    def validate(self, model: nn.Module, device: torch.device) -> tuple[float, float]:
        """Mean loss and mean Dice (at argmax, inside the ROI) over the whole validation images."""
        split = self.dataset.splits["val"]
        losses, dices = [], []
        for image, mask, roi in zip(self.inputs["val"], split.masks, split.rois, strict=True):
            logits = sliding_window_logits(model, image, self.val_spec, device)
            target = training_target(mask, roi)[None]
            losses.append(float(self.loss_fn(logits[None], target)))  # on the CPU: the loss has no weights
            dices.append(dice_in_roi(logits.argmax(0).numpy(), mask, roi))
        return float(np.mean(losses)), float(np.mean(dices))

    def batchnorm_inputs(self) -> torch.Tensor:
        """Unaugmented patches of the training images (fixed seed), to re-estimate BatchNorm."""
        crop = Compose([patch_crop(self.spec.patch_size, self.options.foreground_fraction)])
        crop.set_random_state(seed=self.config.seed)
        sampler = PatchSampler(
            self.train_images, self.train_targets, self.candidates, BATCHNORM_PATCHES, crop
        )
        return torch.stack([sampler[k][0] for k in range(len(sampler))])

    def inference_info(self) -> dict:
        return {
            "task": self.kind,
            "model": self.config.model,
            "model_options": self.config.model_options,
            "classes": list(self.dataset.classes),
            "input": self.spec.model_dump(),
            "modality": self.dataset.modality,
            "dataset": self.dataset.name,
            "tta": bool(self.config.tta),  # evaluation and serving mirror the image alike
            "spacing": self.dataset.splits["train"].median_spacing(),  # mm per array axis, or None
            # trained and normalised inside a region of interest (e.g. a field of view): served images
            # should come with theirs, and the answer says when one did not
            "trained_with_roi": any(roi is not None for roi in self.dataset.splits["train"].rois),
        }


class Segmentation:
    """How the engine loads, configures and builds the segmentation task."""

    @staticmethod
    def load(config: TrainConfig) -> SegmentationDataset:
        return load_segmentation_dataset(config.dataset)

    @staticmethod
    def resolve(config: TrainConfig, dataset: SegmentationDataset) -> tuple[TrainConfig, dict]:
        return resolve_segmentation(config, dataset)

    @staticmethod
    def n_train(dataset: SegmentationDataset) -> int:
        return len(dataset.splits["train"])

    build = SegmentationTask
