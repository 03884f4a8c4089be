"""Grad-CAM at ONNX Runtime speed, for models whose head is average pooling and one linear layer.

Such a model (``CompactResNet.logits_and_class_maps``) gives its logits and every class's map from one
forward pass. Served with a heatmap, that pass is most of a request's model time, and ONNX Runtime runs
it in about half the time of eager PyTorch on a small CNN. So a served model gets a session over a graph
with both outputs, made when the model is loaded (in memory: nothing is written into the run folder) and
checked against the eager model before it is used; a model it does not match keeps the eager pass.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from medsight.data.prepare import InputSpec
from medsight.optimize.export import ONNX_OPSET, quiet_exporter
from medsight.optimize.predictors import ort_session

logger = logging.getLogger(__name__)
TOLERANCE = 1e-4  # absolute and relative, on logits and maps: ``medsight export`` checks probabilities so
ClassMapPass = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class _BothOutputs(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.logits_and_class_maps(x)


def _onnx_bytes(model: nn.Module, example: torch.Tensor) -> bytes:
    """The two-output graph. The TorchScript-based exporter: a second here, where the dynamo-based one
    that ``medsight export`` uses takes several (it is also the one that folds BatchNorm, which ORT's
    graph optimiser does as well)."""
    buffer = io.BytesIO()
    with quiet_exporter():
        torch.onnx.export(
            _BothOutputs(model).eval(),
            (example,),
            buffer,
            input_names=["input"],
            output_names=["logits", "class_maps"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}, "class_maps": {0: "batch"}},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    return buffer.getvalue()


def _matches(model: nn.Module, run: ClassMapPass, example: torch.Tensor) -> bool:
    with torch.inference_mode():
        expected = model.eval().logits_and_class_maps(example)
    found = run(example)
    return all(
        torch.allclose(a, b, rtol=TOLERANCE, atol=TOLERANCE) for a, b in zip(expected, found, strict=True)
    )


def class_map_pass(model: nn.Module, spec: InputSpec, threads: int = 1) -> ClassMapPass | None:
    """``x -> (logits, class_maps)`` on ONNX Runtime with ``threads`` threads, or None where the eager
    model must answer: no such head, an export that fails, or outputs that differ from the eager ones."""
    if not hasattr(model, "logits_and_class_maps"):
        return None
    generator = torch.Generator().manual_seed(0)
    # batch 2: the exporter would fix a size-1 batch dimension into the graph
    example = torch.randn(2, spec.channels, *[spec.image_size] * spec.spatial_dims, generator=generator)
    try:
        session = ort_session(_onnx_bytes(model, example), threads)
    except Exception as err:  # an exporter or runtime gap for this architecture: serve it eagerly
        logger.warning("Grad-CAM stays in PyTorch: the ONNX class-map graph failed (%s)", type(err).__name__)
        return None

    def run(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feed = {"input": np.ascontiguousarray(inputs.numpy(), dtype=np.float32)}
        logits, maps = session.run(None, feed)
        return torch.from_numpy(logits), torch.from_numpy(maps)

    if not _matches(model, run, example):
        logger.warning("Grad-CAM stays in PyTorch: the ONNX class maps differ from the eager model's")
        return None
    return run
