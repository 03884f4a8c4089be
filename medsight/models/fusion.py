"""Multimodal fusion and multi-task heads: an image (or signal) network beside tabular features.

Two ways of combining an image with what is known about the patient, as reviewed in "Fusion of
medical imaging and electronic health records using deep learning" (Huang et al., *npj Digital
Medicine* 2020):

- ``fusion="feature"`` (joint / intermediate fusion): the image backbone's embedding and a small
  MLP's embedding of the tabular features are concatenated and a linear head decides on both.
- ``fusion="late"`` (decision-level fusion): the image model and a tabular model each give class
  probabilities; the result is their weighted mean, with one learned weight per head (starting at
  0.5, the plain mean). The output is the log of that mean, so softmax gives it back exactly.
- ``fusion="none"``: the image alone (what a multi-task model without tabular data uses).

``heads`` lists the class count of each label (multi-task: one head per label, e.g. ``[2, 3]``);
the output is the heads' logits side by side, ``(N, sum(heads))``; ``head_softmax`` turns it into
per-head probabilities. Any registered classifier can be the image ``backbone``: it is built with
``embedding`` outputs (feature fusion) or ``sum(heads)`` outputs (late fusion).

Inputs: ``forward(image, tabular)``, or one dict ``{"image": ..., "tabular": ...}`` (what the
training engine's data loader hands over as a batch).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from medsight.errors import ConfigError

FUSION_MODES = ("feature", "late", "none")


def head_softmax(logits: torch.Tensor, heads: Sequence[int] | None = None) -> torch.Tensor:
    """Probabilities per head, side by side; one head (the default) is a plain softmax."""
    if not heads or len(heads) == 1:
        return torch.softmax(logits, dim=1)
    return torch.cat([torch.softmax(part, dim=1) for part in torch.split(logits, list(heads), dim=1)], dim=1)


class TabularMLP(nn.Module):
    """Two small layers: tabular features are few (tens) and a deeper net only overfits them."""

    def __init__(self, features: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(features, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class FusionNet(nn.Module):
    """Image backbone (+ tabular MLP) -> one head per label; see the module's note."""

    image_branch = "image"  # where Grad-CAM looks for its layer (medsight.explain.maps)

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        *,
        fusion: str = "feature",
        backbone: str = "compact-resnet",
        backbone_options: dict[str, Any] | None = None,
        tabular_features: int = 0,
        heads: Sequence[int] | None = None,
        embedding: int = 64,
        hidden: int = 32,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        from medsight.models.registry import build_model  # the registry lists this module

        _check(fusion, backbone, tabular_features)
        self.fusion, self.heads = fusion, [int(k) for k in (heads or [num_classes])]
        total = sum(self.heads)
        image_outputs = total if fusion == "late" else embedding
        self.image = build_model(
            backbone, spatial_dims, in_channels, image_outputs, **(backbone_options or {})
        )
        self.tabular: nn.Module | None = None
        if fusion == "late":
            self.tabular = nn.Sequential(
                TabularMLP(tabular_features, hidden, dropout), nn.Linear(hidden, total)
            )
            self.mix = nn.Parameter(torch.zeros(len(self.heads)))  # sigmoid(0) = 0.5: the mean, to start
            return
        if fusion == "feature":
            self.tabular = TabularMLP(tabular_features, hidden, dropout)
        width = embedding + (hidden if fusion == "feature" else 0)
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(width, total))

    def forward(
        self, image: torch.Tensor | dict[str, torch.Tensor], tabular: torch.Tensor | None = None
    ) -> torch.Tensor:
        if isinstance(image, dict):
            image, tabular = image["image"], image.get("tabular")
        if self.tabular is not None and tabular is None:
            raise ValueError("this fusion model needs its tabular input beside the image")
        if self.fusion == "late":
            return self._late(image, tabular)
        features = self.image(image)
        if self.tabular is not None:
            features = torch.cat([features, self.tabular(tabular)], dim=1)
        return self.head(features)

    def _late(self, image: torch.Tensor, tabular: torch.Tensor) -> torch.Tensor:
        image_probs = head_softmax(self.image(image), self.heads)
        tabular_probs = head_softmax(self.tabular(tabular), self.heads)
        weight = torch.sigmoid(self.mix)
        per_class = torch.cat([weight[i].expand(k) for i, k in enumerate(self.heads)])
        mixed = per_class * image_probs + (1 - per_class) * tabular_probs
        return torch.log(mixed.clamp_min(1e-7))  # softmax of a log-probability gives it back

    def image_weights(self) -> list[float] | None:
        """Late fusion: the learned weight of the image model's probabilities, per head."""
        return torch.sigmoid(self.mix).tolist() if self.fusion == "late" else None


class ImageView(nn.Module):
    """A fusion model with one patient's tabular row held fixed: an image-only network, so that
    Grad-CAM and occlusion (which perturb the image alone) work unchanged."""

    image_branch = "net.image"

    def __init__(self, net: FusionNet, row: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("row", row.reshape(1, -1).float())

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image, self.row.expand(len(image), -1))


def _check(fusion: str, backbone: str, tabular_features: int) -> None:
    if fusion not in FUSION_MODES:
        raise ConfigError(f"model option fusion={fusion!r}: choose one of {', '.join(FUSION_MODES)}.")
    if backbone == "fusion":
        raise ConfigError(
            "a fusion model's backbone is an image model (compact-resnet, cnn1d, ...), not fusion."
        )
    if fusion != "none" and tabular_features < 1:
        raise ConfigError(
            f"fusion={fusion!r} needs tabular features, and the data set has none: import a CSV manifest "
            "with --tabular COLUMNS, or train with model_options {fusion: none}."
        )
