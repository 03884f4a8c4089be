"""int8 quantization with ONNX Runtime, the method chosen by what the model is made of.

CNNs get *static* quantization (QDQ format, per-channel weights, activation ranges calibrated on
a few hundred training images): convolutions then run as int8 kernels. Models whose weights sit
mostly in Linear/LSTM layers get *dynamic* quantization (activation ranges measured per batch at
run time). Measured on this project's 2-core machine: ONNX Runtime's dynamic int8 is 4-7x slower
than fp32 on CNNs, and PyTorch's dynamic quantization leaves convolutions in float, so neither
dynamic path suits a CNN.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from torch import nn

LINEAR_TYPES = (nn.Linear, nn.LSTM, nn.GRU, nn.RNN, nn.MultiheadAttention)
CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)
CALIBRATION_IMAGES = 300
CALIBRATION_BATCH = 32


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Parameters held by convolutions and by Linear/recurrent layers (the two int8 worlds)."""
    counts = {"conv": 0, "linear": 0}
    for module in model.modules():
        own = sum(p.numel() for p in module.parameters(recurse=False))
        if isinstance(module, CONV_TYPES):
            counts["conv"] += own
        elif isinstance(module, LINEAR_TYPES):
            counts["linear"] += sum(p.numel() for p in module.parameters())
    return counts


def choose_method(model: nn.Module) -> str:
    """``static`` for conv-heavy models, ``dynamic`` when Linear/recurrent weights dominate."""
    counts = parameter_counts(model)
    return "dynamic" if counts["linear"] > counts["conv"] else "static"


def calibration_subset(inputs: np.ndarray, n: int = CALIBRATION_IMAGES, seed: int = 0) -> np.ndarray:
    """A seeded random sample of training inputs: ranges seen across the split, not its first rows."""
    pick = np.random.default_rng(seed).permutation(len(inputs))[:n]
    return np.ascontiguousarray(inputs[np.sort(pick)], dtype=np.float32)


def _reader(input_name: str, images: np.ndarray, batch: int):
    from onnxruntime.quantization import CalibrationDataReader

    class ImageCalibrationReader(CalibrationDataReader):
        """Feeds standardised training images to the calibrator, a batch at a time."""

        def __init__(self) -> None:
            self.batches = iter([images[i : i + batch] for i in range(0, len(images), batch)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            chunk = next(self.batches, None)
            return None if chunk is None else {input_name: chunk}

    return ImageCalibrationReader()


def _output_nodes(model_path: Path) -> list[str]:
    """Nodes that produce the graph's outputs: left in float so logits keep their resolution."""
    graph = onnx.load(str(model_path)).graph
    outputs = {o.name for o in graph.output}
    return [node.name for node in graph.node if outputs & set(node.output)]


def _input_nodes(model_path: Path) -> list[str]:
    """Nodes that read the graph's inputs: left in float, because an image that came as 8-bit values,
    standardised and quantized again onto another 8-bit grid loses grey levels to rounding (measured
    on PneumoniaMNIST: test AUC 0.957 with the first convolution in int8, 0.983 without, as float)."""
    graph = onnx.load(str(model_path)).graph
    inputs = {i.name for i in graph.input}
    return [node.name for node in graph.node if inputs & set(node.input)]


def _preprocess(fp32: Path, out: Path) -> None:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # graph optimisation (folding, fusion) and shape inference before quantization, as ORT advises
    try:
        quant_pre_process(str(fp32), str(out), skip_symbolic_shape=False)
    except TypeError:
        # ORT's symbolic shape inference loses track of recurrent (LSTM/GRU) outputs; ONNX's own
        # shape inference handles them and is enough for the quantizer
        quant_pre_process(str(fp32), str(out), skip_symbolic_shape=True)


def quantize_static_int8(fp32: Path, out: Path, calibration: np.ndarray) -> dict:
    """QDQ, per-channel int8 weights, uint8 activations calibrated (MinMax) on ``calibration``; the
    layers that read the input and write the output stay in float."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    with tempfile.TemporaryDirectory(prefix="medsight-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        _preprocess(fp32, prepared)
        input_name = onnx.load(str(prepared)).graph.input[0].name
        excluded = _input_nodes(prepared) + _output_nodes(prepared)
        quantize_static(
            str(prepared),
            str(out),
            _reader(input_name, calibration, CALIBRATION_BATCH),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"CalibTensorRangeSymmetric": False},
        )
    return {
        "method": "static",
        "format": "QDQ",
        "weights": "int8, per channel",
        "activations": "uint8, MinMax-calibrated",
        "calibration_images": int(len(calibration)),
        "calibration_split": "train",
        "left_in_float": excluded,
    }


def _drop_weight_shapes(path: Path) -> None:
    """Remove shape annotations of weights: the dynamic quantizer transposes Gemm weights into MatMul
    ones and then re-infers shapes, which a stale annotation of the old shape contradicts."""
    model = onnx.load(str(path))
    weights = {init.name for init in model.graph.initializer}
    kept = [info for info in model.graph.value_info if info.name not in weights]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)
    onnx.save(model, str(path))


def quantize_dynamic_int8(fp32: Path, out: Path) -> dict:
    """int8 weights, activations quantized per batch at run time (for Linear/recurrent layers)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="medsight-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        _preprocess(fp32, prepared)
        _drop_weight_shapes(prepared)
        quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8, per_channel=True)
    return {"method": "dynamic", "weights": "int8, per channel", "activations": "quantized per batch"}
