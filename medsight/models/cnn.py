"""A compact residual CNN for small medical images, 2D or 3D.

After "Deep Residual Learning for Image Recognition" (He et al., CVPR 2016), cut down for images
of 28-64 pixels on a CPU: a 3x3 stem without pooling (small images cannot spare resolution),
a few stages of pre-activation-free basic blocks that halve the size and widen the features,
global average pooling, dropout and a linear head. ``spatial_dims`` selects 2D or 3D layers,
``norm`` selects BatchNorm or GroupNorm (GroupNorm keeps per-sample gradients valid for DP).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _conv(spatial_dims: int) -> type[nn.Module]:
    return nn.Conv2d if spatial_dims == 2 else nn.Conv3d


def _norm(kind: str, spatial_dims: int, channels: int) -> nn.Module:
    if kind == "batch":
        return (nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d)(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    raise ValueError(f"norm must be 'batch' or 'group', not {kind!r}")


class BasicBlock(nn.Module):
    def __init__(self, spatial_dims: int, in_ch: int, out_ch: int, stride: int, norm: str) -> None:
        super().__init__()
        conv = _conv(spatial_dims)
        self.body = nn.Sequential(
            conv(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
            _norm(norm, spatial_dims, out_ch),
            nn.ReLU(inplace=True),
            conv(out_ch, out_ch, 3, padding=1, bias=False),
            _norm(norm, spatial_dims, out_ch),
        )
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.skip = nn.Sequential(
                conv(in_ch, out_ch, 1, stride=stride, bias=False), _norm(norm, spatial_dims, out_ch)
            )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.skip(x))


class CompactResNet(nn.Module):
    """Residual CNN classifier; ``features`` is the last convolutional stage (Grad-CAM's target)."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        widths: Sequence[int] = (32, 64, 128),
        blocks: int = 1,
        norm: str = "batch",
        dropout: float = 0.2,
        stem_width: int | None = None,
    ) -> None:
        super().__init__()
        conv = _conv(spatial_dims)
        # with a stem_width every stage halves the size: no block at full resolution (cheaper in 3D)
        stem = stem_width or widths[0]
        self.stem = nn.Sequential(
            conv(in_channels, stem, 3, padding=1, bias=False),
            _norm(norm, spatial_dims, stem),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        in_ch = stem
        for stage, width in enumerate(widths):
            for block in range(blocks):
                stride = 2 if (stage > 0 or stem_width) and block == 0 else 1
                layers.append(BasicBlock(spatial_dims, in_ch, width, stride, norm))
                in_ch = width
        self.features = nn.Sequential(*layers)
        pool = nn.AdaptiveAvgPool2d(1) if spatial_dims == 2 else nn.AdaptiveAvgPool3d(1)
        self.head = nn.Sequential(pool, nn.Flatten(), nn.Dropout(dropout), nn.Linear(in_ch, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.stem(x)))

    def logits_and_class_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and, per class, Σ_c w_kc A_c over the last stage's activations A.

        The head averages A and applies one linear layer, so the gradient of class k's logit with respect
        to A_c is w_kc / (number of positions) everywhere: Grad-CAM's map (Selvaraju et al. 2017) is
        ReLU of this map, up to that positive factor (it is the CAM of Zhou et al. 2016). One forward
        pass, no backward pass.
        """
        features = self.features(self.stem(x))
        linear = self.head[-1]
        return self.head(features), torch.einsum("kc,nc...->nk...", linear.weight, features)
