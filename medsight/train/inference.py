"""Load a trained model from a run folder and predict class probabilities.

Evaluation, explanation, export and serving all go through here, so a model is always
rebuilt and fed exactly as it was trained.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medsight.data.prepare import InputSpec, prepare_images
from medsight.data.tabular import TabularSpec
from medsight.data.transforms import ORIENTED
from medsight.errors import BadInputError
from medsight.models import build_model
from medsight.models.fusion import ImageView, head_softmax
from medsight.train.inputs import batch_length, image_of, model_input, take, with_image
from medsight.train.run_folder import require_run


@dataclass
class TrainedModel:
    model: nn.Module
    spec: InputSpec
    classes: list[str]
    threshold: float | None
    info: dict[str, Any]

    @property
    def tabular(self) -> TabularSpec | None:
        """How a fusion model's tabular input is encoded (None: the model reads the image alone)."""
        return TabularSpec(**self.info["tabular"]) if self.info.get("tabular") else None

    @property
    def heads(self) -> dict[str, list[str]] | None:
        """Several labels: label name -> classes, in the order of the output's columns."""
        return self.info.get("heads")

    def predict_images(
        self,
        images: np.ndarray,
        *,
        tta: bool = False,
        batch_size: int = 256,
        tabular: np.ndarray | None = None,
    ) -> np.ndarray:
        """Stored images (N, C, *spatial) [+ encoded tabular features (N, F)] -> probabilities (N, K)."""
        return predict_probs(
            self.model,
            model_input(prepare_images(images, self.spec), self.check_tabular(tabular, len(images))),
            tta=tta,
            flip_axes=tta_axes(self.info.get("modality", "unknown"), self.spec.spatial_dims),
            batch_size=batch_size,
            heads=head_sizes(self.heads),
        )

    def check_tabular(self, tabular: np.ndarray | None, n: int) -> np.ndarray | None:
        """The features a fusion model needs, checked; None for a model that reads the image alone."""
        spec = self.tabular
        if spec is None:
            return None
        if tabular is None:
            raise BadInputError(
                f"this model also reads tabular features ({', '.join(c.name for c in spec.columns)}); "
                "give them beside the image."
            )
        tabular = np.asarray(tabular, dtype=np.float32)
        if tabular.shape != (n, spec.n_features):
            raise BadInputError(
                f"tabular features shaped {tabular.shape}; this model needs ({n}, {spec.n_features}): "
                f"{', '.join(spec.names)}."
            )
        return tabular

    def with_tabular(self, row: np.ndarray) -> TrainedModel:
        """This model with one patient's tabular features fixed: an image-only model (for explanations)."""
        row = self.check_tabular(np.asarray(row).reshape(1, -1), 1)
        view = ImageView(self.model, torch.from_numpy(row)).eval()
        info = {k: v for k, v in self.info.items() if k != "tabular"}
        return TrainedModel(view, self.spec, self.classes, self.threshold, info)


def head_sizes(heads: dict[str, list[str]] | None) -> list[int] | None:
    return [len(classes) for classes in heads.values()] if heads else None


def tta_axes(modality: str, spatial_dims: int) -> list[int]:
    """Flip axes for test-time augmentation: none of them for images whose anatomy has a side."""
    return [] if modality in ORIENTED else list(range(2, 2 + spatial_dims))


def flip_combinations(axes: list[int]) -> list[list[int]]:
    return [list(c) for r in range(1, len(axes) + 1) for c in itertools.combinations(axes, r)]


@torch.no_grad()
def predict_probs(
    model: nn.Module,
    inputs: torch.Tensor | dict[str, torch.Tensor],
    *,
    tta: bool = False,
    flip_axes: list[int] | None = None,
    batch_size: int = 256,
    heads: list[int] | None = None,
) -> np.ndarray:
    """Probabilities (N, K); inputs are an image tensor or a fusion model's dict (``inputs.py``);
    with several ``heads`` each head's columns are a softmax of their own."""
    model.eval()
    outputs = []
    for start in range(0, batch_length(inputs), batch_size):
        batch = take(inputs, slice(start, start + batch_size))
        probs = head_softmax(model(batch), heads)
        if tta and flip_axes:
            flips = flip_combinations(flip_axes)  # every combination: 3 for 2D, 7 for 3D, plus identity
            for dims in flips:
                flipped = with_image(batch, torch.flip(image_of(batch), dims=dims))  # the image only
                probs += head_softmax(model(flipped), heads)
            probs /= 1 + len(flips)
        outputs.append(probs)
    return torch.cat(outputs).numpy().astype(np.float64) if outputs else np.zeros((0, 0))


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated or foreign file: say which and what to do
        raise BadInputError(
            f"{path}: the checkpoint cannot be read ({type(err).__name__}); "
            "it may be incomplete or corrupt. Train the run again."
        ) from err


def load_trained_model(run_dir: Path) -> TrainedModel:
    run_dir = require_run(run_dir, "checkpoint.pt")
    checkpoint = load_checkpoint(run_dir / "checkpoint.pt")
    inference = checkpoint.get("inference")
    if not inference or "best_state" not in checkpoint:
        raise BadInputError(f"{run_dir}/checkpoint.pt holds no trained model yet; finish training first.")
    if inference.get("task") == "segmentation":  # masks, not labels: see segmentation_inference.py
        raise BadInputError(
            f"{run_dir} holds a segmentation model; this step handles classifiers only for now."
        )
    spec = InputSpec(**inference["input"])
    model = build_model(
        inference["model"],
        spec.spatial_dims,
        spec.channels,
        len(inference["classes"]),
        **inference["model_options"],
    )
    if inference.get("dp_module_fix"):  # trained privately: rebuild the layers Opacus replaced
        from medsight.train.privacy import fix_module

        model = fix_module(model)
    model.load_state_dict(checkpoint["best_state"])
    model.eval()
    return TrainedModel(model, spec, inference["classes"], _threshold(run_dir), inference)


def _threshold(run_dir: Path) -> float | None:
    """The operating threshold chosen on validation by the run's evaluation (None before it)."""
    try:
        return json.loads((run_dir / "metrics.json").read_text()).get("threshold")
    except (FileNotFoundError, json.JSONDecodeError):
        return None
