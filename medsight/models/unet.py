"""U-Nets for segmentation, 2D or 3D (``spatial_dims``), from MONAI's networks.

U-Net: "U-Net: Convolutional Networks for Biomedical Image Segmentation" (Ronneberger et al.,
MICCAI 2015). ``unet`` is MONAI's ``UNet`` with residual units (after Kerfoot et al., "Left-Ventricle
Quantification Using Residual U-Net", STACOM 2018); ``basic-unet`` is MONAI's ``BasicUNet``, the
plain two-convolutions-per-level network of the original paper.

Both output ``num_classes`` logit maps at the input's size (2 for one structure: background and
foreground). Defaults are narrow, so a 2D model trains in minutes on two CPU cores: vessels and
lesions need resolution and context more than width.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

SEGMENTATION_MODELS = ("unet", "basic-unet")


def unet(
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    channels: Sequence[int] = (16, 32, 64, 128),
    strides: Sequence[int] | None = None,
    num_res_units: int = 2,
    norm: str = "batch",
    dropout: float = 0.0,
    **options: Any,
) -> nn.Module:
    """MONAI ``UNet``: each level halves the size (``strides`` default 2) and doubles the width."""
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=num_classes,
        channels=tuple(channels),
        strides=tuple(strides) if strides is not None else (2,) * (len(channels) - 1),
        num_res_units=num_res_units,
        norm=norm,
        dropout=dropout,
        **options,
    )


def basic_unet(
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    features: Sequence[int] = (16, 16, 32, 64, 128, 16),
    norm: str = "batch",
    **options: Any,
) -> nn.Module:
    """MONAI ``BasicUNet``: four down-samplings; ``features`` are the six level widths."""
    from monai.networks.nets import BasicUNet

    return BasicUNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=num_classes,
        features=tuple(features),
        norm=norm,
        **options,
    )


def size_multiple(name: str, options: dict[str, Any]) -> int:
    """Input sides must be a multiple of this (every down-sampling halves them)."""
    if name == "basic-unet":
        return 16
    strides = options.get("strides") or (2,) * (len(options.get("channels", (16, 32, 64, 128))) - 1)
    multiple = 1
    for stride in strides:
        multiple *= int(stride)
    return multiple
