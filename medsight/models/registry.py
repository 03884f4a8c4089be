"""Build a classifier by name; every entry takes ``spatial_dims`` so 2D and 3D share code."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from medsight.errors import ConfigError
from medsight.models.cnn import CompactResNet
from medsight.models.fusion import FusionNet
from medsight.models.sequence import BeatCNN, ConvRecurrent, gru, lstm
from medsight.models.unet import basic_unet, unet


def _monai_resnet(depth: int) -> Callable[..., nn.Module]:
    def build(spatial_dims: int, in_channels: int, num_classes: int, **options: Any) -> nn.Module:
        from monai.networks.nets import resnet

        # small inputs: a 3x3 stride-1 stem and no max-pool keep the resolution a 28-pixel image needs
        options = {"conv1_t_size": 3, "conv1_t_stride": 1, "no_max_pool": True, **options}
        return getattr(resnet, f"resnet{depth}")(
            spatial_dims=spatial_dims, n_input_channels=in_channels, num_classes=num_classes, **options
        )

    return build


def _monai_densenet(spatial_dims: int, in_channels: int, num_classes: int, **options: Any) -> nn.Module:
    from monai.networks.nets import DenseNet121

    return DenseNet121(
        spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_classes, **options
    )


MODELS: dict[str, tuple[Callable[..., nn.Module], str]] = {
    "compact-resnet": (CompactResNet, "compact residual CNN (ours), fast on CPU; the default"),
    "resnet10": (_monai_resnet(10), "MONAI ResNet-10 (He et al. 2016), small-image stem"),
    "resnet18": (_monai_resnet(18), "MONAI ResNet-18 (He et al. 2016), small-image stem"),
    "densenet121": (_monai_densenet, "MONAI DenseNet-121 (Huang et al. 2017); needs images of 64 px or more"),
    "unet": (unet, "segmentation: MONAI residual UNet (Ronneberger et al. 2015; Kerfoot et al. 2018)"),
    "basic-unet": (basic_unet, "segmentation: MONAI BasicUNet, the original U-Net (Ronneberger et al. 2015)"),
    "cnn1d": (BeatCNN, "1D CNN for signals such as ECG beats (Kiranyaz et al. 2016)"),
    "lstm": (lstm, "bidirectional LSTM for 1D signals (Hochreiter & Schmidhuber 1997)"),
    "gru": (gru, "bidirectional GRU for 1D signals (Cho et al. 2014)"),
    "cnn-gru": (ConvRecurrent, "1D convolutions then a bidirectional GRU (Oh et al. 2018)"),
    "fusion": (FusionNet, "image + tabular features (feature-level or late fusion), one head per label"),
}


def has_class_map_head(name: str) -> bool:
    """Whether architecture ``name`` ends in average pooling and one linear layer, whose forward pass gives
    Grad-CAM's class maps as well: served with a heatmap in one ONNX Runtime pass (``optimize.class_maps``).

    Read from the class (no weights loaded), as the server reads the loaded model: the
    ``logits_and_class_maps`` method is the one place that says so, so a new architecture with such a
    head needs only that method (and its class, not a builder function, as its registry entry)."""
    builder = MODELS[name][0] if name in MODELS else None
    return hasattr(builder, "logits_and_class_maps")


def build_model(
    name: str, spatial_dims: int, in_channels: int, num_classes: int, **options: Any
) -> nn.Module:
    if name not in MODELS:
        raise ConfigError(f"unknown model '{name}'; choose one of {', '.join(MODELS)}.")
    try:
        return MODELS[name][0](spatial_dims, in_channels, num_classes, **options)
    except TypeError as err:
        raise ConfigError(f"model '{name}' does not take these options {sorted(options)}: {err}") from err
