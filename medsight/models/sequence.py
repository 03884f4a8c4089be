"""Classifiers of 1D signals ``(N, C, L)``: ECG beats and other sequences.

- ``BeatCNN``: a 1D convolutional network as in "Real-Time Patient-Specific ECG Classification
  by 1-D Convolutional Neural Networks" (Kiranyaz et al., *IEEE TBME* 2016) and Acharya et al.
  (*Comput Biol Med* 2017): stacked convolution blocks that halve the length, global average
  pooling, a linear head.
- ``RecurrentClassifier``: an LSTM ("Long Short-Term Memory", Hochreiter & Schmidhuber, *Neural
  Comput* 1997) or GRU (Cho et al., *EMNLP* 2014), bidirectional ("Bidirectional Recurrent Neural
  Networks", Schuster & Paliwal, *IEEE TSP* 1997), over the signal average-pooled in time (a beat
  at 360 Hz is 250 steps; a quarter of that keeps the QRS shape and trains 4x faster).
- ``ConvRecurrent``: convolutions first, a bidirectional GRU over their features (the CNN-LSTM
  family of Oh et al., *Comput Biol Med* 2018): local shape from the convolutions, order from
  the recurrence.

All take ``(spatial_dims, in_channels, num_classes, **options)`` like every medsight model.
Each head also sees every input channel's mean over time: a channel that is constant in time
(the RR-interval context of ``medsight.data.ecg``) then reaches the decision directly instead
of through filters built for shapes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medsight.errors import ConfigError


def _require_1d(spatial_dims: int, name: str) -> None:
    if spatial_dims != 1:
        raise ConfigError(
            f"{name} classifies 1D signals (spatial_dims=1, inputs (N, C, L)), not {spatial_dims}D images; "
            "choose a 2D/3D model such as compact-resnet."
        )


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm1d(channels)
    if kind == "group":  # per-sample statistics: what differential privacy needs
        return nn.GroupNorm(min(8, channels), channels)
    raise ConfigError(f"norm must be 'batch' or 'group', not {kind!r}.")


def conv_stack(in_channels: int, widths: Sequence[int], kernel: int, pool: int, norm: str) -> nn.Sequential:
    """Average-pool by ``pool``, then a conv block per width."""
    # a beat at 360 Hz is 250 samples; half that rate keeps the QRS shape at a quarter of the cost
    blocks: list[nn.Module] = [nn.AvgPool1d(pool)] if pool > 1 else []
    for width in widths:
        blocks.append(conv_block(in_channels, width, kernel, norm))
        in_channels = width
    return nn.Sequential(*blocks)


def conv_block(in_ch: int, out_ch: int, kernel: int, norm: str) -> nn.Sequential:
    """Two same-length convolutions, then a max-pool that halves the length."""
    pad = kernel // 2
    return nn.Sequential(
        nn.Conv1d(in_ch, out_ch, kernel, padding=pad, bias=False),
        _norm(norm, out_ch),
        nn.ReLU(inplace=True),
        nn.Conv1d(out_ch, out_ch, kernel, padding=pad, bias=False),
        _norm(norm, out_ch),
        nn.ReLU(inplace=True),
        nn.MaxPool1d(2),
    )


class ContextHead(nn.Module):
    """Linear head over pooled features and the inputs' per-channel means (see the module's note)."""

    def __init__(self, features: int, in_channels: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(features + in_channels, num_classes)

    def forward(self, pooled: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(torch.cat([pooled, inputs.mean(dim=-1)], dim=1)))


class BeatCNN(nn.Module):
    """1D CNN; ``features`` is the last convolutional stage (Grad-CAM's target layer)."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        widths: Sequence[int] = (16, 32, 64),
        kernel: int = 5,
        pool: int = 2,
        norm: str = "batch",
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        _require_1d(spatial_dims, "cnn1d")
        self.features = conv_stack(in_channels, widths, kernel, pool, norm)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.head = ContextHead(widths[-1], in_channels, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(1), x)


def _recurrent(cell: str, in_size: int, hidden: int, layers: int, bidirectional: bool, dropout: float):
    kinds = {"lstm": nn.LSTM, "gru": nn.GRU}
    if cell not in kinds:
        raise ConfigError(f"cell must be 'lstm' or 'gru', not {cell!r}.")
    return kinds[cell](
        in_size,
        hidden,
        num_layers=layers,
        batch_first=True,
        bidirectional=bidirectional,
        dropout=dropout if layers > 1 else 0.0,
    )


def _pool_time(outputs: torch.Tensor) -> torch.Tensor:
    """(N, T, F) recurrent outputs -> (N, 2F): mean and max over time (the whole beat, its peak)."""
    return torch.cat([outputs.mean(dim=1), outputs.amax(dim=1)], dim=1)


class RecurrentClassifier(nn.Module):
    """LSTM or GRU over the time-pooled signal; no convolution, so no Grad-CAM (saliency over time)."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        cell: str = "lstm",
        hidden: int = 32,
        layers: int = 1,
        bidirectional: bool = True,
        pool: int = 4,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        _require_1d(spatial_dims, f"{cell} classifier")
        self.pool = nn.AvgPool1d(pool) if pool > 1 else nn.Identity()
        self.rnn = _recurrent(cell, in_channels, hidden, layers, bidirectional, dropout)
        width = hidden * (2 if bidirectional else 1)
        self.head = ContextHead(2 * width, in_channels, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.rnn(self.pool(x).transpose(1, 2))
        return self.head(_pool_time(outputs), x)


class ConvRecurrent(nn.Module):
    """Convolution blocks, then a bidirectional GRU over their features; ``features`` is the conv part."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        widths: Sequence[int] = (16, 32),
        kernel: int = 5,
        hidden: int = 32,
        pool: int = 2,
        cell: str = "gru",
        norm: str = "batch",
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        _require_1d(spatial_dims, "cnn-gru")
        self.features = conv_stack(in_channels, widths, kernel, pool, norm)
        self.rnn = _recurrent(cell, widths[-1], hidden, 1, True, 0.0)
        self.head = ContextHead(4 * hidden, in_channels, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.rnn(self.features(x).transpose(1, 2))
        return self.head(_pool_time(outputs), x)


def lstm(spatial_dims: int, in_channels: int, num_classes: int, **options) -> nn.Module:
    return RecurrentClassifier(spatial_dims, in_channels, num_classes, cell="lstm", **options)


def gru(spatial_dims: int, in_channels: int, num_classes: int, **options) -> nn.Module:
    return RecurrentClassifier(spatial_dims, in_channels, num_classes, cell="gru", **options)
