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
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from monai.visualize import GradCAM, OcclusionSensitivity
from monai.visualize.class_activation_maps import ModelWithHooks
from torch import nn

from medsight.data.prepare import prepare_images
from medsight.errors import BadInputError, ConfigError
from medsight.train.inference import TrainedModel

METHODS = ("gradcam", "occlusion")
# Grad-CAM needs the gradient at the target layer's output, which is where autograd starts recording
# (``_track_from_here``); PyTorch warns that the hook then sees no input gradients, which is the point.
warnings.filterwarnings(
    "ignore",
    message="Full backward hook is firing when gradients are computed with respect to module outputs",
)


@dataclass
class Explanation:
    map: np.ndarray  # the stored image's spatial shape, values in [0, 1], 1 = most important
    target_class: int
    method: str
    probabilities: np.ndarray  # (K,) softmax of the unaltered image


def target_layer_for(model: nn.Module) -> str:
    """Grad-CAM's layer: the last convolutional stage, where features are still spatial."""
    branch = getattr(model, "image_branch", None)  # fusion models: the layer is in the image branch
    if branch:
        return f"{branch}.{target_layer_for(model.get_submodule(branch))}"
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


class HookedModel(ModelWithHooks):
    """MONAI's hooked model, which may choose the class to explain from the logits of the very forward
    pass it explains (``pick``): a prediction and its Grad-CAM then cost one forward and one backward
    pass instead of a forward for the prediction and another for the map."""

    pick: Callable[[torch.Tensor], int] | None = None

    def __init__(self, model: nn.Module, layer: str) -> None:
        super().__init__(model, layer, register_forward=True, register_backward=True)
        dict(model.named_modules())[layer].register_forward_hook(_track_from_here)
        # MONAI calls eval() and zero_grad() on every pass: each walks every module, for nothing on a
        # clone that is always in eval mode and whose weights take no gradient (_shared_weight_clone)
        model.eval = lambda: model  # type: ignore[method-assign]
        model.zero_grad = lambda set_to_none=True: None  # type: ignore[method-assign]

    def class_score(self, logits: torch.Tensor, class_idx: int) -> torch.Tensor:
        if self.pick is not None:
            class_idx = self.class_idx = self.pick(logits.detach())
        return super().class_score(logits, class_idx)


def _track_from_here(_module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
    """Autograd starts recording at the target layer's output: the weights are frozen and the input
    needs no gradient, so the layers before it run as in inference and the backward pass only crosses
    the layers after it (the head), which is all Grad-CAM needs."""
    return output if output.requires_grad else output.requires_grad_(True)


_PER_THREAD = threading.local()


def gradcam_for(model: nn.Module) -> GradCAM:
    """One hooked clone per model and thread: a served model pays the copy once, and two requests
    in two threads never read each other's activations."""
    cams = getattr(_PER_THREAD, "cams", None)
    if cams is None:
        cams = _PER_THREAD.cams = weakref.WeakKeyDictionary()
    if model not in cams:
        clone = _shared_weight_clone(model)
        layer = target_layer_for(clone)
        hooked = HookedModel(clone, layer)
        # identity post-processing: MONAI's default normaliser flips the map (max -> 0)
        cams[model] = GradCAM(hooked, target_layers=layer, postprocessing=lambda x: x)
    return cams[model]


def gradcam_maps(model: nn.Module, inputs: torch.Tensor, targets: np.ndarray) -> np.ndarray:
    """Grad-CAM per image at the input's size, (N, *spatial), each scaled so its peak is 1."""
    cam = gradcam_for(model)
    maps = torch.zeros((len(inputs), *inputs.shape[2:]))
    with torch.enable_grad():  # callers (serving) may run under no_grad
        for target in np.unique(targets):
            # one class per call: MONAI sums the class score over the batch
            index = torch.as_tensor(np.flatnonzero(targets == target))
            maps[index] = cam(inputs[index], class_idx=int(target)).detach()[:, 0]
    return unit_peak(maps.numpy())


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
    return unit_peak(maps)


def unit_peak(maps: np.ndarray) -> np.ndarray:
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
    return unit_peak(resized[:, 0].numpy())


def explain_images(
    trained: TrainedModel,
    images: np.ndarray,
    method: str = "gradcam",
    target_classes: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stored images (N, C, *spatial) -> (maps at the stored size, target classes, probabilities)."""
    check_images(trained, images)
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


def check_images(trained: TrainedModel, images: np.ndarray) -> None:
    expected = trained.spec.spatial_dims + 2
    if images.ndim != expected:
        raise BadInputError(
            f"expected images shaped (N, C, {'D, ' if expected == 5 else ''}H, W) for this "
            f"{trained.spec.spatial_dims}D model, got shape {tuple(images.shape)}."
        )
