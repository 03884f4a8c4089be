"""One calling convention for every form a model takes: eager PyTorch, TorchScript, ONNX Runtime.

A predictor maps a batch of *standardised* inputs (float32, (N, C, *spatial), prepared with the
run's ``InputSpec``) to logits; a fusion model's batch is ``{"image": ..., "tabular": ...}``. Checks, evaluation, benchmarks and serving all go through here,
so every variant is fed and judged the same way.
"""

from __future__ import annotations

import itertools
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from medsight.data.prepare import InputSpec, prepare_images
from medsight.data.tabular import TabularSpec
from medsight.errors import BadInputError, DataNotFoundError
from medsight.optimize.common import EXPORTS, VARIANTS, cpu_threads, softmax
from medsight.train.inference import load_trained_model, tta_axes
from medsight.train.inputs import batch_length, image_of, model_input, take, with_image

Batch = np.ndarray | dict[str, np.ndarray]


class Predictor(Protocol):
    def logits(self, batch: Batch) -> np.ndarray: ...


def _tensors(batch: Batch) -> torch.Tensor | dict[str, torch.Tensor]:
    if isinstance(batch, dict):
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}
    return torch.from_numpy(np.ascontiguousarray(batch))


class EagerPredictor:
    def __init__(self, model: nn.Module) -> None:
        self.model = model.eval()

    def logits(self, batch: Batch) -> np.ndarray:
        with torch.inference_mode():
            return self.model(_tensors(batch)).numpy()


class TorchScriptPredictor(EagerPredictor):
    def __init__(self, path: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript still loads and runs
            super().__init__(torch.jit.load(str(path), map_location="cpu"))

    def logits(self, batch: Batch) -> np.ndarray:
        if not isinstance(batch, dict):
            return super().logits(batch)
        with torch.inference_mode():  # traced with two positional inputs (image, tabular)
            inputs = _tensors(batch)
            return self.model(inputs["image"], inputs["tabular"]).numpy()


def ort_session(model: Path | bytes, threads: int | None = None):
    """An ONNX Runtime CPU session over a file or a graph in memory, all graph optimisations on,
    intra-op threads = cores unless ``threads`` says."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or cpu_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # warnings about unused initialisers are noise to a user
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


class OnnxPredictor:
    def __init__(self, path: Path, threads: int | None = None) -> None:
        self.session = ort_session(path, threads)
        self.input_name = self.session.get_inputs()[0].name

    def logits(self, batch: Batch) -> np.ndarray:
        if isinstance(batch, dict):  # a fusion model's graph has inputs named "image" and "tabular"
            feed = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in batch.items()}
            return self.session.run(None, feed)[0]
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


def _float32(inputs: torch.Tensor | np.ndarray) -> np.ndarray:
    array = inputs.numpy() if isinstance(inputs, torch.Tensor) else np.asarray(inputs)
    return array.astype(np.float32, copy=False)


def predict(
    predictor: Predictor,
    inputs: torch.Tensor | np.ndarray | dict,
    batch_size: int = 256,
    tta_flips: Sequence[Sequence[int]] = (),
) -> np.ndarray:
    """Standardised inputs -> probabilities (N, K), float64; TTA averages over the given flips
    (each a list of axes flipped together, applied to the image only)."""
    array = {k: _float32(v) for k, v in inputs.items()} if isinstance(inputs, dict) else _float32(inputs)
    outputs = []
    for start in range(0, batch_length(array), batch_size):
        batch = take(array, slice(start, start + batch_size))
        probs = softmax(predictor.logits(batch).astype(np.float64))
        for axes in tta_flips:
            flipped = with_image(batch, np.flip(image_of(batch), axis=tuple(axes)))
            probs += softmax(predictor.logits(flipped).astype(np.float64))
        outputs.append(probs / (1 + len(tta_flips)))
    return np.concatenate(outputs)


@dataclass
class ServableModel:
    """A variant of a run with the ``predict_images`` interface of ``TrainedModel``."""

    name: str
    path: Path
    predictor: Predictor
    spec: InputSpec
    classes: list[str]
    threshold: float | None
    modality: str
    tabular: TabularSpec | None = None  # a fusion model's tabular input (None: the image alone)

    def predict_images(
        self,
        images: np.ndarray,
        *,
        tta: bool = False,
        batch_size: int = 256,
        tabular: np.ndarray | None = None,
    ) -> np.ndarray:
        axes = tta_axes(self.modality, self.spec.spatial_dims) if tta else []
        # every combination of the allowed flips, as the eager model's TTA does
        flips = [c for r in range(1, len(axes) + 1) for c in itertools.combinations(axes, r)]
        if self.tabular is not None and tabular is None:
            raise BadInputError(f"this model also reads tabular features ({', '.join(self.tabular.names)}).")
        features = None if self.tabular is None else np.asarray(tabular, dtype=np.float32)
        inputs = model_input(prepare_images(images, self.spec).numpy(), features)
        return predict(self.predictor, inputs, batch_size, flips)


# the variants every run can have, by name -> file inside the run folder
FIXED_VARIANTS = {
    "eager": "checkpoint.pt",
    "torchscript": f"{EXPORTS}/model.torchscript.pt",
    "onnx-fp32": f"{EXPORTS}/model.onnx",
}


def variant_path(run_dir: Path, name: str) -> Path:
    if name in FIXED_VARIANTS:
        return Path(run_dir) / FIXED_VARIANTS[name]
    record = Path(run_dir) / VARIANTS / name / "variant.json"
    if not record.exists():
        raise DataNotFoundError(
            f"{run_dir}: no variant '{name}'. Make it with `medsight export` or `medsight optimize`."
        )
    return record.parent / json.loads(record.read_text())["file"]


def existing_variant_path(run_dir: Path, name: str) -> Path:
    """``variant_path``, refused (DataNotFoundError) when the variant was never made or its file is gone."""
    path = variant_path(run_dir, name)
    if not path.exists():
        raise DataNotFoundError(f"{path}: not found. Make it with `medsight export` or `medsight optimize`.")
    return path


def load_predictor(run_dir: Path, name: str) -> Predictor:
    """The predictor of one variant of a run (``eager``, ``torchscript``, ``onnx-fp32`` or a variant folder)."""
    path = existing_variant_path(run_dir, name)
    if name == "eager":
        return EagerPredictor(load_trained_model(run_dir).model)
    if name == "torchscript":
        return TorchScriptPredictor(path)
    if path.suffix == ".onnx":
        return OnnxPredictor(path)
    from medsight.optimize.compress import load_torch_variant

    return EagerPredictor(load_torch_variant(run_dir, path.parent))


def load_variant(run_dir: Path, name: str) -> ServableModel:
    trained = load_trained_model(run_dir)
    return ServableModel(
        name,
        variant_path(run_dir, name),
        load_predictor(run_dir, name),
        trained.spec,
        trained.classes,
        trained.threshold,
        trained.info.get("modality", "unknown"),
        trained.tabular,
    )


def serving_variant_name(run_dir: Path) -> str:
    """The variant ``medsight bench`` chose for serving (``serving.json``), else ``eager``."""
    record = Path(run_dir) / "serving.json"
    return json.loads(record.read_text()).get("variant", "eager") if record.exists() else "eager"


def load_serving_model(run_dir: Path) -> ServableModel:
    """The variant ``medsight bench`` chose for serving (``serving.json``), else the eager model."""
    return load_variant(run_dir, serving_variant_name(run_dir))
