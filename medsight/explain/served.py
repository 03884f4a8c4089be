"""Explanations at serving speed: a prediction and its Grad-CAM from one pass, and an ensemble's heatmap.

Serving calls a class and explains it on every request. Done step by step, that is a forward pass for
the probabilities, another inside ``explain`` to choose the class, and a forward and backward pass for
Grad-CAM. Here Grad-CAM's own forward pass gives the probabilities, and the class to explain is chosen
from them between the forward and the backward pass (``maps.HookedModel.pick``): one forward and one
backward pass give both, with the same numbers as the step-by-step path. A model whose head is average
pooling and one linear layer (``logits_and_class_maps``) needs no backward pass at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from medsight.data.prepare import prepare_images
from medsight.explain.maps import (
    Explanation,
    check_images,
    gradcam_for,
    input_maps,
    predicted_classes,
    resize_maps,
    unit_peak,
)
from medsight.train.inference import TrainedModel, flip_combinations, tta_axes

ClassMapPass = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _flips(trained: TrainedModel, inputs: torch.Tensor, tta: bool) -> list[tuple[int, ...]]:
    """The test-time flips ``TrainedModel.predict_images`` averages (none without ``tta``)."""
    modality = trained.info.get("modality", "unknown")
    return flip_combinations(tta_axes(modality, inputs.ndim - 2)) if tta else []


@torch.no_grad()
def _flipped_probabilities(
    model: torch.nn.Module, inputs: torch.Tensor, flips: list[tuple[int, ...]]
) -> tuple[torch.Tensor | None, int]:
    """Sum of the softmax over the test-time flips of one input (one batched pass), and their count."""
    if not flips:
        return None, 0
    batch = torch.cat([torch.flip(inputs, dims=dims) for dims in flips])
    return torch.softmax(model.eval()(batch), dim=1).sum(dim=0, keepdim=True), len(flips)


def _eager_class_maps(model: torch.nn.Module) -> ClassMapPass | None:
    """The eager ``logits_and_class_maps`` of a model with such a head (in eval mode), else None."""
    if not hasattr(model, "logits_and_class_maps"):
        return None
    if model.training:  # loaded models are in eval mode; eval() walks every module, so only if not
        model.eval()
    return model.logits_and_class_maps


def predict_and_gradcam(
    trained: TrainedModel,
    image: np.ndarray,
    threshold: float | None,
    *,
    tta: bool = False,
    size: Sequence[int] | None = None,
    class_maps: ClassMapPass | None = None,
) -> Explanation:
    """One stored image (C, *spatial): its probabilities (averaged over test-time flips when ``tta``, as
    ``TrainedModel.predict_images`` does), and the Grad-CAM of the class they call at ``threshold``,
    resized to ``size`` (default: the image's own).

    ``class_maps``: the model's ``logits_and_class_maps`` pass run elsewhere (ONNX Runtime,
    ``optimize.class_maps``), checked to match the eager one."""
    check_images(trained, image[None])
    inputs = prepare_images(image[None], trained.spec)
    flips = _flips(trained, inputs, tta)
    size = tuple(size or image.shape[1:])
    one_pass = class_maps or _eager_class_maps(trained.model)
    if one_pass is not None:  # Grad-CAM without its backward pass
        return _from_class_maps(one_pass, inputs, flips, threshold, size)
    flipped, n_flips = _flipped_probabilities(trained.model, inputs, flips)
    seen: dict[str, np.ndarray] = {}

    def pick(logits: torch.Tensor) -> int:
        probabilities = torch.softmax(logits, dim=1)
        if flipped is not None:
            probabilities = (probabilities + flipped) / (1 + n_flips)
        seen["probabilities"] = probabilities[0].numpy().astype(np.float64)
        return int(predicted_classes(seen["probabilities"][None], threshold)[0])

    cam = gradcam_for(trained.model)
    cam.nn_module.pick = pick
    try:
        with torch.enable_grad():  # callers (serving) may run under no_grad
            raw = cam(inputs).detach()[:, 0]
    finally:
        cam.nn_module.pick = None
    maps = resize_maps(unit_peak(raw.numpy()), size)
    return Explanation(maps[0], int(cam.nn_module.class_idx), "gradcam", seen["probabilities"])


@torch.no_grad()
def _from_class_maps(
    one_pass: ClassMapPass,
    inputs: torch.Tensor,
    flips: list[tuple[int, ...]],
    threshold: float | None,
    size: tuple[int, ...],
) -> Explanation:
    """``predict_and_gradcam`` for models whose head is average pooling and one linear layer
    (``CompactResNet.logits_and_class_maps``): the same map as MONAI's Grad-CAM from one forward pass,
    the test-time flips riding in the same batch."""
    batch = torch.cat([inputs, *[torch.flip(inputs, dims=dims) for dims in flips]])
    logits, class_maps = one_pass(batch)
    found = torch.softmax(logits, dim=1).mean(dim=0).numpy().astype(np.float64)
    target = int(predicted_classes(found[None], threshold)[0])
    mode = "bilinear" if inputs.ndim == 4 else "trilinear"  # as MONAI's Grad-CAM upsamples
    raw = F.interpolate(
        F.relu(class_maps[:1, target : target + 1]), inputs.shape[2:], mode=mode, align_corners=False
    )
    maps = resize_maps(unit_peak(raw[:, 0].numpy()), size)
    return Explanation(maps[0], target, "gradcam", found)


def weighted_maps(
    members: Sequence[TrainedModel],
    weights: Sequence[float],
    image: np.ndarray,
    target: int,
    method: str = "gradcam",
    size: Sequence[int] | None = None,
) -> np.ndarray:
    """The map of class ``target`` in one stored image: each model's map, weighted (an ensemble's heatmap
    weighs its members as its probabilities do), at ``size`` (default: the image's), peak 1."""
    total: np.ndarray | None = None
    for member, weight in zip(members, weights, strict=True):
        check_images(member, image[None])
        inputs = prepare_images(image[None], member.spec)
        own = input_maps(member.model, inputs, np.array([target]), method)
        resized = weight * resize_maps(own, tuple(size or image.shape[1:]))
        total = resized if total is None else total + resized
    assert total is not None, "at least one model"
    return unit_peak(total)[0]
