"""Segmentation defaults derived from the data, in nnU-Net's spirit: a user need not tune.

The fingerprint (image sizes, channels, modality, share of structure pixels, intensities) sets the
patch size (as large as the images allow, up to 96 pixels in 2D and 64 voxels in 3D), a batch
holding about the same number of pixels whatever the patch, the optimiser steps and the intensity
normalisation. The rules are written out here plainly, so a reader can check them; every value
chosen is recorded in the run's ``config.yaml``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medsight.data.segmentation import SegmentationDataset
from medsight.data.transforms import ORIENTED
from medsight.errors import ConfigError, validation_error
from medsight.models.unet import SEGMENTATION_MODELS, size_multiple
from medsight.train.config import TrainConfig

DEFAULT_MODEL = "unet"
CLASSIFIER_DEFAULT = "compact-resnet"  # TrainConfig's default model: replaced, not refused
MAX_PATCH = {2: 96, 3: 64}
PIXELS_PER_BATCH = {2: 96 * 96 * 8, 3: 64**3 * 2}
STEPS_PER_EPOCH = 100  # an epoch is this many batches of patches; validation runs after each
TOTAL_STEPS = {2: 3000, 3: 2000}  # optimiser steps of a default run (DRIVE: ~5 min of CPU time)
# Plain convolutions (no residual units): on DRIVE's validation images residual units, twice the
# width or more steps all reached the same Dice (0.76) at 2-4x the time, so the fast network is the default.
DEFAULT_UNET_OPTIONS = {"channels": [16, 32, 64, 128], "num_res_units": 0}


class SegmentationOptions(BaseModel):
    """``task_options`` the segmentation task knows; None means "derive it from the data"."""

    model_config = ConfigDict(extra="forbid")

    patch_size: list[int] | None = Field(None, description="training patch and inference window, per axis")
    patches_per_epoch: int | None = Field(None, ge=1)
    foreground_fraction: float = Field(
        0.5, ge=0, le=1, description="share of patches centred on the structure"
    )
    intensity: Literal["image-zscore", "local-zscore", "dataset-zscore"] | None = None
    local_sigma: float | None = Field(None, gt=0, description="local-zscore neighbourhood (pixels)")
    clip: list[float] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    overlap: float = Field(0.5, ge=0, lt=1, description="sliding-window overlap at inference")


def parse_options(values: dict[str, Any]) -> SegmentationOptions:
    try:
        return SegmentationOptions(**values)
    except ValidationError as err:
        raise validation_error(
            err, list(SegmentationOptions.model_fields), "segmentation task option"
        ) from err


@dataclass
class SegmentationFingerprint:
    n_train: int
    n_val: int
    spatial_dims: int
    median_shape: list[int]
    min_shape: list[int]
    channels: int
    modality: str
    foreground_share: float
    has_roi: bool

    def as_dict(self) -> dict:
        return asdict(self)


def fingerprint(dataset: SegmentationDataset) -> SegmentationFingerprint:
    train = dataset.splits["train"]
    shapes = np.array([image.shape[1:] for image in train.images])
    return SegmentationFingerprint(
        n_train=len(train),
        n_val=len(dataset.splits["val"]),
        spatial_dims=dataset.spatial_dims,
        median_shape=[int(s) for s in np.median(shapes, axis=0)],
        min_shape=[int(s) for s in shapes.min(axis=0)],
        channels=dataset.channels,
        modality=dataset.modality,
        foreground_share=round(train.foreground_share(), 5),
        has_roi=any(r is not None for r in train.rois),
    )


def default_patch(fp: SegmentationFingerprint, multiple: int, side: int | None) -> list[int]:
    """Per axis: the largest multiple of the network's down-sampling that fits the median image."""
    top = side or MAX_PATCH[fp.spatial_dims]
    return [max(multiple, min(top, s) // multiple * multiple) for s in fp.median_shape]


def dataset_intensity(dataset: SegmentationDataset) -> dict[str, list[float]]:
    """CT: clip to the 0.5-99.5th percentiles of the structure's voxels, then one mean and sd (nnU-Net)."""
    split = dataset.splits["train"]
    values = np.concatenate([img[0][m > 0].ravel() for img, m in zip(split.images, split.masks, strict=True)])
    low, high = np.percentile(values, [0.5, 99.5])
    clipped = np.clip(values, low, high)
    return {
        "clip": [float(low), float(high)],
        "mean": [float(clipped.mean())],
        "std": [float(clipped.std() or 1.0)],
    }


def check_model(config: TrainConfig) -> str:
    if config.model == CLASSIFIER_DEFAULT:
        return DEFAULT_MODEL
    if config.model not in SEGMENTATION_MODELS:
        raise ConfigError(
            f"model '{config.model}' is a classifier; segmentation needs one of {', '.join(SEGMENTATION_MODELS)}."
        )
    return config.model


def resolve_segmentation(config: TrainConfig, dataset: SegmentationDataset) -> tuple[TrainConfig, dict]:
    """``config`` with every open setting filled from the data, and the fingerprint they came from."""
    if config.dp_epsilon is not None:
        raise ConfigError(
            "differential privacy is not available for segmentation yet; leave out --dp-epsilon."
        )
    fp = fingerprint(dataset)
    options = parse_options(config.task_options)
    model = check_model(config)
    model_options = config.model_options or (DEFAULT_UNET_OPTIONS if model == "unet" else {})
    chosen: dict[str, Any] = {"model": model, "model_options": model_options}
    patch = options.patch_size or default_patch(fp, size_multiple(model, model_options), config.image_size)
    if len(patch) != fp.spatial_dims:
        raise ConfigError(f"patch_size {patch} needs {fp.spatial_dims} sides, one per axis of the images.")
    batch = config.batch_size or int(np.clip(PIXELS_PER_BATCH[fp.spatial_dims] // math.prod(patch), 2, 32))
    chosen["batch_size"] = batch
    if config.epochs is None:
        chosen["epochs"] = TOTAL_STEPS[fp.spatial_dims] // STEPS_PER_EPOCH
    if config.early_stopping_patience is None:  # a short schedule: every epoch to the end
        chosen["early_stopping_patience"] = chosen.get("epochs", config.epochs)
    chosen.update(_optimiser_defaults(config, fp.modality))
    intensity = options.intensity or ("dataset-zscore" if fp.modality == "ct" else "image-zscore")
    resolved = options.model_copy(
        update={
            "patch_size": patch,
            "patches_per_epoch": options.patches_per_epoch or STEPS_PER_EPOCH * batch,
            "intensity": intensity,
        }
    )
    if intensity == "dataset-zscore" and resolved.mean is None:
        resolved = resolved.model_copy(update=dataset_intensity(dataset))
    chosen["task_options"] = resolved.model_dump()
    return config.model_copy(update=chosen), fp.as_dict()


def _optimiser_defaults(config: TrainConfig, modality: str) -> dict[str, Any]:
    chosen: dict[str, Any] = {}
    if config.lr is None:
        # AdamW 6e-3 reached DRIVE's validation plateau in a third of the steps 2e-3 needed
        chosen["lr"] = {"adamw": 6e-3, "sgd": 0.01, "rmsprop": 1e-3}[config.optimizer]
    if config.weight_decay is None:
        chosen["weight_decay"] = 1e-4
    if config.augment is None:
        chosen["augment"] = "standard"
    if config.ema_decay is None:
        chosen["ema_decay"] = 0.0
    if config.swa_start is None:
        chosen["swa_start"] = 0.0
    if config.label_smoothing is None:
        chosen["label_smoothing"] = 0.0
    if config.class_weights == "auto":
        chosen["class_weights"] = "none"  # the Dice term already balances a small structure
    if config.tta is None:  # mirrored passes at evaluation, where anatomy has no side (nnU-Net mirrors)
        chosen["tta"] = modality not in ORIENTED
    return chosen
