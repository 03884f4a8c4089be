"""Saliency maps for a trained classifier: Grad-CAM and occlusion sensitivity, 2D and 3D.

Grad-CAM (Selvaraju et al., ICCV 2017) weights the target layer's activations by the pooled
gradient of the class score; occlusion sensitivity (Zeiler & Fergus, ECCV 2014) slides a soft
mask over the image and records how much the class probability drops. Both come from
``monai.visualize``. Maps are computed at the network's input size, then resized to the stored
image's size, so a map always lies over the image the caller gave.
"""

from __future__ import annotations

import copy
import threading
import warnings
import weakref
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from monai.visualize import GradCAM, OcclusionSensitivity
from torch import nn

from medsight.data.prepare import prepare_images
from medsight.errors import BadInputError, ConfigError
from medsight.train.inference import TrainedModel

METHODS = ("gradcam", "occlusion")


@dataclass
class Explanation:
    map: np.ndarray  # the stored image's spatial shape, values in [0, 1], 1 = most important
    target_class: int
    method: str
    probabilities: np.ndarray  # (K,) softmax of the unaltered image


def target_layer_for(model: nn.Module) -> str:
    """Grad-CAM's layer: the last convolutional stage, where features are still spatial."""
    names = dict(model.named_modules())
    for name in ("features", "layer4", "class_layers.relu"):  # ours, MONAI ResNet, MONAI DenseNet
        if name in names:
            return name
    convs = [name for name, m in names.items() if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d)]
    if not convs:
        raise ConfigError(f"{type(model).__name__} has no convolutional layer for Grad-CAM; use occlusion.")
    return convs[-1]


def predicted_classes(probs: np.ndarray, threshold: float | None) -> np.ndarray:
    """The class the run calls: binary models honour the validation threshold, others argmax."""
    if probs.shape[1] == 2 and threshold is not None:
        return (probs[:, 1] >= threshold).astype(np.int64)
    return probs.argmax(axis=1)


def _shared_weight_clone(model: nn.Module) -> nn.Module:
    """New module objects over the same weight storage, frozen.

    Grad-CAM hangs hooks on its target layer; on a clone they never leak into the caller's model
    and no gradient lands in the weights. Weights updated in place (``load_state_dict``) show through.
    """
    memo: dict[int, object] = {
        id(p): nn.Parameter(p.detach(), requires_grad=False) for p in model.parameters()
    }
    memo.update({id(b): b for b in model.buffers()})
    clone = copy.deepcopy(model, memo)
    return clone.eval()


_PER_THREAD = threading.local()


def _gradcam_for(model: nn.Module) -> GradCAM:
    """One hooked clone per model and thread: a served model pays the copy once, and two requests
    in two threads never read each other's activations."""
    cams = getattr(_PER_THREAD, "cams", None)
    if cams is None:
        cams = _PER_THREAD.cams = weakref.WeakKeyDictionary()
    if model not in cams:
        clone = _shared_weight_clone(model)
        # identity post-processing: MONAI's default normaliser flips the map (max -> 0)
        cams[model] = GradCAM(clone, target_layers=target_layer_for(clone), postprocessing=lambda x: x)
    return cams[model]


def gradcam_maps(model: nn.Module, inputs: torch.Tensor, targets: np.ndarray) -> np.ndarray:
    """Grad-CAM per image at the input's size, (N, *spatial), each scaled so its peak is 1."""
    cam = _gradcam_for(model)
    maps = torch.zeros((len(inputs), *inputs.shape[2:]))
    with torch.enable_grad():  # callers (serving) may run under no_grad
        for target in np.unique(targets):
            # one class per call: MONAI sums the class score over the batch
            index = torch.as_tensor(np.flatnonzero(targets == target))
            batch = inputs[index].clone().requires_grad_(True)  # a graph even with frozen weights
            maps[index] = cam(batch, class_idx=int(target)).detach()[:, 0]
    return _unit_peak(maps.numpy())


def occlusion_maps(model: nn.Module, inputs: torch.Tensor, targets: np.ndarray) -> np.ndarray:
    """Drop in the target probability when a soft mask covers each region, (N, *spatial), peak 1."""
    spatial = inputs.shape[2:]
    mask = [max(3, s // 4) for s in spatial]  # a quarter of the side: 7-16 px on 28-64 px images
    occlusion = OcclusionSensitivity(
        model,
        mask_size=mask,
        n_batch=64,
        verbose=False,
        overlap=0.6 if len(spatial) == 2 else 0.5,  # 3D: fewer windows, still smooth
    )
    maps = np.zeros((len(inputs), *spatial), dtype=np.float32)
    with torch.no_grad(), warnings.catch_warnings():
        # MONAI 1.6 indexes with lists, which torch deprecates: noise for our users, not a fault
        warnings.filterwarnings("ignore", message="Using a non-tuple sequence", category=UserWarning)
        probs = torch.softmax(model.eval()(inputs), dim=1)
        for i, target in enumerate(targets):
            occluded, _ = occlusion(inputs[i : i + 1])
            drop = probs[i, int(target)] - occluded[0, int(target)]
            maps[i] = drop.clamp_min(0).numpy()
    return _unit_peak(maps)


def _unit_peak(maps: np.ndarray) -> np.ndarray:
    """Scale each map to peak 1; an all-zero map (no evidence) stays zero rather than dividing by 0."""
    maps = np.nan_to_num(np.maximum(maps, 0.0)).astype(np.float32)
    peak = maps.reshape(len(maps), -1).max(axis=1).reshape((-1,) + (1,) * (maps.ndim - 1))
    return np.divide(maps, peak, out=np.zeros_like(maps), where=peak > 0)


def input_maps(model: nn.Module, inputs: torch.Tensor, targets: np.ndarray, method: str) -> np.ndarray:
    """Maps at the network's input size for prepared inputs (N, C, *spatial)."""
    if method == "gradcam":
        return gradcam_maps(model, inputs, targets)
    if method == "occlusion":
        return occlusion_maps(model, inputs, targets)
    raise ConfigError(f"unknown explanation method '{method}'; choose one of {', '.join(METHODS)}.")


def resize_maps(maps: np.ndarray, spatial: tuple[int, ...]) -> np.ndarray:
    """(N, *spatial_in) -> (N, *spatial), linear interpolation, still in [0, 1] with peak 1."""
    if tuple(maps.shape[1:]) == tuple(spatial):
        return maps
    mode = "bilinear" if len(spatial) == 2 else "trilinear"
    resized = F.interpolate(torch.from_numpy(maps)[:, None], size=spatial, mode=mode, align_corners=False)
    return _unit_peak(resized[:, 0].numpy())


def explain_images(
    trained: TrainedModel,
    images: np.ndarray,
    method: str = "gradcam",
    target_classes: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stored images (N, C, *spatial) -> (maps at the stored size, target classes, probabilities)."""
    _check_images(trained, images)
    inputs = prepare_images(images, trained.spec)
    probs = trained.predict_images(images)
    targets = predicted_classes(probs, trained.threshold) if target_classes is None else target_classes
    targets = np.asarray(targets, dtype=np.int64)
    if targets.min(initial=0) < 0 or targets.max(initial=0) >= len(trained.classes):
        raise BadInputError(f"target class must be between 0 and {len(trained.classes) - 1}.")
    maps = input_maps(trained.model, inputs, targets, method)
    return resize_maps(maps, tuple(images.shape[2:])), targets, probs


def explain(
    trained: TrainedModel, image: np.ndarray, method: str = "gradcam", target_class: int | None = None
) -> Explanation:
    """Where the model looked for ``target_class`` (default: the class it predicts) in one stored image."""
    image = np.asarray(image)
    targets = None if target_class is None else np.array([target_class])
    maps, chosen, probs = explain_images(trained, image[None], method, targets)
    return Explanation(maps[0], int(chosen[0]), method, probs[0])


def _check_images(trained: TrainedModel, images: np.ndarray) -> None:
    expected = trained.spec.spatial_dims + 2
    if images.ndim != expected:
        raise BadInputError(
            f"expected images shaped (N, C, {'D, ' if expected == 5 else ''}H, W) for this "
            f"{trained.spec.spatial_dims}D model, got shape {tuple(images.shape)}."
        )
