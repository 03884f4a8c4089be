"""Image classification (2D, 3D): one label per image, scored on validation by AUC.

With tabular features beside the images (fusion) or several labels per image (multi-task heads),
the model and loss come from ``multimodal.py``; a data set with neither takes the plain path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.losses import FocalLoss
from sklearn.metrics import roc_auc_score
from torch import nn

from medsight.data.dataset import ImageDataset
from medsight.data.prepare import InputSpec, prepare_images
from medsight.data.registry import load_dataset
from medsight.data.transforms import augmentation, standardise
from medsight.models import build_model
from medsight.train.config import TrainConfig
from medsight.train.defaults import fingerprint, resolve
from medsight.train.inference import head_sizes, predict_probs
from medsight.train.inputs import Rows, model_input, to_device
from medsight.train.tasks.multimodal import (
    HeadsLoss,
    heads_validation,
    is_multimodal,
    resolve_multimodal,
    uses_tabular,
)


@dataclass
class Prepared:
    spec: InputSpec
    inputs: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]
    tabular: dict[str, torch.Tensor] | None = None  # a fusion model's second input, per split

    def model_inputs(self, split: str) -> torch.Tensor | dict[str, torch.Tensor]:
        return model_input(self.inputs[split], None if self.tabular is None else self.tabular[split])


class AugmentedImages(torch.utils.data.Dataset):
    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, augment, tabular: torch.Tensor | None = None
    ) -> None:
        self.images, self.labels, self.augment, self.tabular = images, labels, augment, tabular

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | dict[str, torch.Tensor], torch.Tensor]:
        image = self.images[index]
        if self.augment is not None:
            image = torch.as_tensor(self.augment(image))
        if self.tabular is not None:  # augmentation is for the image; tabular features stay as they are
            return {"image": image, "tabular": self.tabular[index]}, self.labels[index]
        return image, self.labels[index]


def prepare(dataset: ImageDataset, config: TrainConfig) -> Prepared:
    """Preprocess every split once; standardise with the training split's statistics only."""
    train_images = dataset.splits["train"].images
    raw = InputSpec(
        spatial_dims=dataset.spatial_dims,
        channels=dataset.channels,
        image_size=config.image_size,
        intensity=config.intensity,
        denoise=config.denoise,
        mean=[0.0] * dataset.channels,
        std=[1.0] * dataset.channels,
        source_dtype=str(train_images.dtype),
    )
    mean, std = standardise(prepare_images(train_images, raw))
    spec = raw.model_copy(update={"mean": mean, "std": std})
    inputs = {name: prepare_images(split.images, spec) for name, split in dataset.splits.items()}
    labels = {name: torch.as_tensor(split.labels) for name, split in dataset.splits.items()}
    tabular = None
    if uses_tabular(config):  # already encoded with the training split's statistics (data/tabular.py)
        tabular = {name: torch.as_tensor(split.tabular) for name, split in dataset.splits.items()}
    return Prepared(spec, inputs, labels, tabular)


def class_weights(labels: torch.Tensor, n_classes: int, mode: str) -> torch.Tensor | None:
    if mode != "balanced":
        return None
    counts = torch.bincount(labels, minlength=n_classes).float().clamp_min(1)
    return counts.sum() / (n_classes * counts)


def make_loss(config: TrainConfig, weights: torch.Tensor | None) -> nn.Module:
    if config.loss == "focal":
        return FocalLoss(to_onehot_y=True, use_softmax=True, gamma=config.focal_gamma, weight=weights)
    return nn.CrossEntropyLoss(weight=weights, label_smoothing=config.label_smoothing)


def validation_score(labels: np.ndarray, probs: np.ndarray) -> float:
    """AUC (binary) or macro one-vs-rest AUC; NaN when the split has one class."""
    if len(np.unique(labels)) < 2:
        return float("nan")
    if probs.shape[1] == 2:
        return float(roc_auc_score(labels, probs[:, 1]))
    return float(
        roc_auc_score(labels, probs, multi_class="ovr", average="macro", labels=range(probs.shape[1]))
    )


class ClassificationTask:
    """Whole images, one class each: cross-entropy (or focal) loss, validation AUC."""

    kind = "classification"
    score_name = "AUC"

    def __init__(self, config: TrainConfig, dataset: ImageDataset) -> None:
        self.config, self.dataset, self.dataset_name = config, dataset, dataset.name
        self.data = prepare(dataset, config)
        self.augment = augmentation(dataset.modality, dataset.spatial_dims, config.augment)
        self.heads = head_sizes(dataset.heads)
        self.loss_fn = (
            self._heads_loss() if self.heads else self._loss(self.data.labels["train"], dataset.n_classes)
        )

    def _loss(self, labels: torch.Tensor, n_classes: int) -> nn.Module:
        return make_loss(self.config, class_weights(labels, n_classes, self.config.class_weights))

    def _heads_loss(self) -> nn.Module:
        labels = self.data.labels["train"]
        losses = [self._loss(labels[:, k], size) for k, size in enumerate(self.heads)]
        return HeadsLoss(losses, self.heads, one_loss)

    def describe(self) -> str:
        text = (
            f"{len(self.data.labels['train'])} images {self.dataset.image_shape} -> {self.config.image_size}"
        )
        if self.data.tabular is not None:
            text += f" + {self.data.tabular['train'].shape[1]} tabular features"
        return text + (f", {len(self.heads)} labels" if self.heads else "")

    def train_set(self) -> torch.utils.data.Dataset:
        tabular = None if self.data.tabular is None else self.data.tabular["train"]
        return AugmentedImages(self.data.inputs["train"], self.data.labels["train"], self.augment, tabular)

    def reseed(self, seed: int) -> None:
        if self.augment is not None:
            self.augment.set_random_state(seed=seed % 2**32)

    def build_model(self) -> nn.Module:
        d = self.dataset
        return build_model(
            self.config.model, d.spatial_dims, d.channels, d.n_classes, **self.config.model_options
        )

    def to(self, device: torch.device) -> None:
        self.loss_fn = self.loss_fn.to(device)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return one_loss(self.loss_fn, outputs, targets)

    def validate(self, model: nn.Module, device: torch.device) -> tuple[float, float]:
        labels = self.data.labels["val"]
        probs = predict_probs(model, to_device(self.data.model_inputs("val"), device), heads=self.heads)
        if self.heads:
            return heads_validation(labels, probs, self.heads, validation_score)
        loss = nn.functional.nll_loss(torch.log(torch.as_tensor(probs).clamp_min(1e-7)), labels).item()
        return loss, validation_score(labels.numpy(), probs)

    def batchnorm_inputs(self) -> torch.Tensor | Rows:
        inputs = self.data.model_inputs("train")
        return Rows(inputs) if isinstance(inputs, dict) else inputs

    def inference_info(self) -> dict:
        info = {
            "task": self.kind,
            "classes": self.dataset.classes,
            "input": self.data.spec.model_dump(),
            "modality": self.dataset.modality,
            "dataset": self.dataset.name,
        }
        if self.data.tabular is not None:  # how to encode a new patient's values (data/tabular.py)
            info["tabular"] = self.dataset.tabular_spec.model_dump()
        if self.dataset.heads:
            info["heads"] = self.dataset.heads
        if "ecg" in self.dataset.extra:  # how a new record's beats are cut (predict/ecg.py)
            info["ecg"] = {k: self.dataset.extra["ecg"][k] for k in ("settings", "channels")}
        return info


def one_loss(loss_fn: nn.Module, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if isinstance(loss_fn, FocalLoss):
        return loss_fn(outputs, targets[:, None])
    return loss_fn(outputs, targets)


class Classification:
    """How the engine loads, configures and builds the classification task."""

    @staticmethod
    def load(config: TrainConfig) -> ImageDataset:
        return load_dataset(config.dataset)

    @staticmethod
    def resolve(config: TrainConfig, dataset: ImageDataset) -> tuple[TrainConfig, dict]:
        """``config`` with the data's defaults filled in, and the data fingerprint they came from."""
        fp = fingerprint(dataset)
        if is_multimodal(config, dataset):
            recorded = {**fp.as_dict(), "tabular": dataset.tabular_names, "heads": dataset.heads}
            return resolve_multimodal(config, dataset, lambda plain: resolve(plain, fp)), recorded
        return resolve(config, fp), fp.as_dict()

    @staticmethod
    def n_train(dataset: ImageDataset) -> int:
        return len(dataset.splits["train"])

    build = ClassificationTask
