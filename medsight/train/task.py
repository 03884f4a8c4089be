"""What the training engine needs to know about one kind of learning problem.

The engine (``engine.py``) owns everything a run has in common: seeding, the optimiser and its
schedule, EMA and weight averaging, checkpoints that resume exactly, early stopping, the time
budget, DDP and differential privacy, progress and the run folder. A ``Task`` owns what differs
between image classification, segmentation and the rest: which examples an epoch sees, the network,
the loss, how validation scores a model, and what inference needs to know later.

Tasks are built by name from the config (``make_task``); ``config.task`` picks one.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from medsight.train.config import TrainConfig


class Task(Protocol):
    """One learning problem, prepared for training (all data already loaded and preprocessed)."""

    kind: str
    """"classification", "segmentation", ... — recorded in the checkpoint's ``inference`` block."""
    score_name: str
    """The validation score's name for logs and history ("AUC", "Dice"); higher is better."""
    dataset_name: str

    def train_set(self) -> torch.utils.data.Dataset:
        """The training examples of one epoch: items are ``(input, target)`` tensors.

        Augmentation happens inside ``__getitem__`` (it may run in a loader worker) and draws from
        the random state ``reseed`` sets, so an epoch is reproducible.
        """
        ...

    def reseed(self, seed: int) -> None:
        """Seed the augmentation for the epoch about to start (called before ``train_set``)."""
        ...

    def build_model(self) -> nn.Module:
        """A freshly initialised network (the engine seeds torch first)."""
        ...

    def to(self, device: torch.device) -> None:
        """Move what the loss holds (class weights, ...) to the training device."""
        ...

    def describe(self) -> str:
        """The data part of the start-of-training log line ("4708 images (28, 28) -> 28")."""
        ...

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The mean training loss of a batch."""
        ...

    def validate(self, model: nn.Module, device: torch.device) -> tuple[float, float]:
        """``(validation loss, validation score)`` of ``model`` in eval mode; the score may be NaN."""
        ...

    def batchnorm_inputs(self) -> torch.Tensor:
        """Training inputs (preprocessed, unaugmented) to re-estimate BatchNorm after weight averaging."""
        ...

    def inference_info(self) -> dict:
        """What inference needs besides the weights (classes, input spec, ...); JSON-able."""
        ...


def task_kind(config: TrainConfig):
    """The entry of ``medsight/train/tasks`` that ``config.task`` names."""
    from medsight.train.tasks import TASKS

    return TASKS[config.task]
