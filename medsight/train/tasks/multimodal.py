"""What the classification task adds for tabular features (fusion) and several labels (multi-task).

Configuration. On a data set with tabular features the model becomes ``fusion``
(``medsight/models/fusion.py``) around the image model the config names; ``model_options:
{fusion: feature|late|none}`` chooses how (default ``feature``; ``none`` trains the image model
alone on the same data, the comparison fusion must beat). A data set with several labels gets one
head per label. The resolved config names it all (``model: fusion``, ``model_options: {fusion,
backbone, backbone_options, tabular_features, heads}``), so a run can be rebuilt from its record.
A data set with neither never comes here: its path is the plain one.

Loss and validation with several heads: the heads' losses are summed; the validation score is
the mean of the heads' AUCs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from medsight.data.dataset import ImageDataset
from medsight.errors import ConfigError
from medsight.models.fusion import FUSION_MODES
from medsight.train.config import TrainConfig

FUSION_SETTINGS = ("fusion", "embedding", "hidden", "dropout")  # FusionNet's own options


def is_multimodal(config: TrainConfig, dataset: ImageDataset) -> bool:
    """Whether the run needs more than the plain image path."""
    asked = config.model == "fusion" or "fusion" in config.model_options
    return asked or dataset.tabular_spec is not None or bool(dataset.heads)


def split_fusion(config: TrainConfig, spatial_dims: int) -> tuple[TrainConfig, dict]:
    """``config`` with the image backbone as its model, and the fusion settings taken out of it."""
    options = dict(config.model_options)
    if config.model != "fusion":  # e.g. model: cnn1d, model_options: {fusion: late, widths: [...]}
        fusion = {"fusion": options.pop("fusion")} if "fusion" in options else {}
        return config.model_copy(update={"model_options": options}), fusion
    fusion = {key: options.pop(key) for key in FUSION_SETTINGS if key in options}
    backbone = options.pop("backbone", None) or ("cnn1d" if spatial_dims == 1 else "compact-resnet")
    plain = {"model": backbone, "model_options": options.pop("backbone_options", None) or {}}
    unknown = sorted(set(options) - {"tabular_features", "heads"})  # those two come from the data
    if unknown:
        raise ConfigError(
            f"model 'fusion' does not take {', '.join(unknown)}; its options are "
            f"{', '.join(FUSION_SETTINGS)}, backbone and backbone_options (the image model's own options)."
        )
    return config.model_copy(update=plain), fusion


def with_fusion(config: TrainConfig, fusion: dict, dataset: ImageDataset) -> TrainConfig:
    """The resolved image config wrapped in a fusion model for ``dataset``'s tabular features and heads."""
    # default: fuse what there is; several labels without tabular data train the image alone
    mode = fusion.get("fusion") or ("none" if dataset.heads and dataset.tabular_spec is None else "feature")
    if mode not in FUSION_MODES:
        raise ConfigError(f"model option fusion={mode!r}: choose one of {', '.join(FUSION_MODES)}.")
    if mode != "none" and dataset.tabular_spec is None:
        raise ConfigError(
            f"fusion={mode!r} needs tabular features, and data set '{dataset.name}' has none: import a CSV "
            "manifest with --tabular COLUMNS, or leave the fusion option out."
        )
    if mode != "none" and config.dp_epsilon is not None:  # Opacus' sampler collates tensors only
        raise ConfigError(
            "differential privacy is not available for fusion models yet; train the image alone "
            "(model_options {fusion: none}) or without --dp-epsilon."
        )
    heads = [len(classes) for classes in dataset.heads.values()] if dataset.heads else None
    if mode == "none" and heads is None:
        return config  # the image model alone: exactly the plain path
    options = {
        **fusion,
        "fusion": mode,
        "backbone": config.model,
        "backbone_options": config.model_options,
    }
    if mode != "none":
        options["tabular_features"] = dataset.tabular_spec.n_features
    if heads is not None:
        options["heads"] = heads
    return config.model_copy(update={"model": "fusion", "model_options": options})


def resolve_multimodal(
    config: TrainConfig, dataset: ImageDataset, resolve_plain: Callable[[TrainConfig], TrainConfig]
) -> TrainConfig:
    """Fill the open settings for the backbone as for any image model, then wrap it."""
    plain, fusion = split_fusion(config, dataset.spatial_dims)
    return with_fusion(resolve_plain(plain), fusion, dataset)


def uses_tabular(config: TrainConfig) -> bool:
    return config.model == "fusion" and config.model_options.get("fusion") in ("feature", "late")


# --------------------------------------------------------------------------- several heads


class HeadsLoss(nn.Module):
    """The sum of one loss per head over the heads' columns of the output."""

    def __init__(self, losses: list[nn.Module], heads: list[int], one: Callable) -> None:
        super().__init__()
        self.losses, self.heads, self.one = nn.ModuleList(losses), heads, one

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        parts = torch.split(outputs, self.heads, dim=1)
        return sum(
            self.one(fn, part, targets[:, k])
            for k, (fn, part) in enumerate(zip(self.losses, parts, strict=True))
        )


def heads_validation(
    labels: torch.Tensor, probs: np.ndarray, heads: list[int], score: Callable
) -> tuple[float, float]:
    """(summed NLL, mean AUC over the heads that have both classes in validation; NaN if none)."""
    loss, scores, start = 0.0, [], 0
    for k, size in enumerate(heads):
        part = torch.as_tensor(probs[:, start : start + size])
        loss += nn.functional.nll_loss(torch.log(part.clamp_min(1e-7)), labels[:, k]).item()
        scores.append(score(labels[:, k].numpy(), probs[:, start : start + size]))
        start += size
    finite = [s for s in scores if np.isfinite(s)]
    return loss, float(np.mean(finite)) if finite else float("nan")
