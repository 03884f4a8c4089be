"""Is a saliency map faithful to the model? Two published checks, cheap enough for every run.

Deletion and insertion (Petsiuk et al., "RISE", BMVC 2018): remove the pixels the map ranks
highest first (replaced by the image's mean) and watch the class probability fall; or start from
a blurred image and put them back, watching it rise. The area under each curve summarises it:
deletion lower is better, insertion higher is better. A smooth random map at the same coarseness
gives the bar a map must clear.

Model-parameter randomisation (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018):
re-initialise the network from the top layer down (cascading) and compare the maps with Spearman
rank correlation. A map that still looks the same explains the image, not the model; a faithful
method's correlation falls towards 0.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from scipy.stats import rankdata
from torch import nn

from medsight.data.prepare import prepare_images
from medsight.explain.maps import input_maps, predicted_classes
from medsight.train.inference import TrainedModel

STEPS = 16  # 17 points per curve: enough for a stable area, one small batch per image
CASCADE = (("logits", 0.0), ("top 25% of layers", 0.25), ("top 50% of layers", 0.5), ("all layers", 1.0))


# --------------------------------------------------------------------------- deletion / insertion


def _blurred(inputs: torch.Tensor) -> torch.Tensor:
    """Insertion's start: a blur strong enough to erase lesion-sized detail but keep the layout."""
    sigma = max(1.0, inputs.shape[-1] / 8)
    spatial = inputs.ndim - 2
    return torch.from_numpy(gaussian_filter(inputs.numpy(), sigma=(0, 0) + (sigma,) * spatial))


def _orders(saliency: np.ndarray, steps: int, rng: np.random.Generator) -> np.ndarray:
    """(steps + 1, *spatial) masks: step k covers the k/steps most important pixels.

    A tiny random jitter breaks ties (flat zero regions) at random rather than in raster order.
    """
    scores = saliency.ravel() + rng.uniform(0, 1e-6, saliency.size)
    rank = np.empty(saliency.size, dtype=np.int64)
    rank[np.argsort(-scores, kind="stable")] = np.arange(saliency.size)
    counts = np.round(np.linspace(0, saliency.size, steps + 1)).astype(np.int64)
    return (rank[None, :] < counts[:, None]).reshape((steps + 1, *saliency.shape))


@torch.no_grad()
def perturbation_curves(
    model: nn.Module,
    inputs: torch.Tensor,
    maps: np.ndarray,
    targets: np.ndarray,
    steps: int = STEPS,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Target-class probability along deletion and insertion, each (N, steps + 1)."""
    model.eval()
    rng = np.random.default_rng(seed)
    spatial_axes = tuple(range(1, inputs.ndim - 1))
    blurred = _blurred(inputs)
    deletion, insertion = np.zeros((2, len(inputs), steps + 1))
    for i, image in enumerate(inputs):
        masks = torch.from_numpy(_orders(maps[i], steps, rng))[:, None]  # (steps + 1, 1, *spatial)
        mean = image.mean(dim=spatial_axes, keepdim=True)
        batch = torch.cat([torch.where(masks, mean, image), torch.where(masks, image, blurred[i])])
        probs = torch.softmax(model(batch), dim=1)[:, int(targets[i])].numpy()
        deletion[i], insertion[i] = probs[: steps + 1], probs[steps + 1 :]
    return deletion, insertion


def curve_auc(curves: np.ndarray) -> np.ndarray:
    """Area under each curve over the fraction of pixels changed (0..1), trapezoid rule."""
    return (curves[:, 1:] + curves[:, :-1]).sum(axis=1) / (2 * (curves.shape[1] - 1))


def random_maps(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Uniform noise on a grid a quarter of the image's side, upsampled: random, but as blobby as a CAM.

    Pixel-level noise would be a weaker bar: scattered deletions hurt any model less than a blob.
    """
    n, *spatial = shape
    coarse = torch.from_numpy(rng.uniform(size=(n, 1, *[max(2, s // 4) for s in spatial])).astype(np.float32))
    mode = "bilinear" if len(spatial) == 2 else "trilinear"
    return F.interpolate(coarse, size=tuple(spatial), mode=mode, align_corners=False)[:, 0].numpy()


# --------------------------------------------------------------------------- randomisation


def _parametrised_layers(model: nn.Module) -> list[nn.Module]:
    """Layers holding their own weights, output end first (registration order follows the forward pass)."""
    return [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))][::-1]


def randomised_copy(model: nn.Module, fraction: float, seed: int = 0) -> nn.Module:
    """A copy with the top layers re-initialised: the logits layer alone at 0, every layer at 1."""
    clone = copy.deepcopy(model)
    layers = _parametrised_layers(clone)
    count = max(1, round(fraction * len(layers)))
    with torch.random.fork_rng(devices=[]):  # seeded, without disturbing the caller's random stream
        torch.manual_seed(seed)
        for layer in layers[:count]:
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()
            else:
                for weight in layer.parameters(recurse=False):
                    nn.init.normal_(weight, std=0.02)
    return clone.eval()


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rho of two maps; None when either is constant (no ranking to compare)."""
    ra, rb = rankdata(a.ravel()), rankdata(b.ravel())
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def randomisation_check(
    model: nn.Module, inputs: torch.Tensor, targets: np.ndarray, method: str, seed: int = 0
) -> list[dict]:
    """Spearman correlation of the original maps with the maps of ever more randomised models."""
    original = input_maps(model, inputs, targets, method)
    levels = []
    for name, fraction in CASCADE:
        randomised = input_maps(randomised_copy(model, fraction, seed), inputs, targets, method)
        rhos = [rank_correlation(o, r) for o, r in zip(original, randomised, strict=True)]
        levels.append({"randomised": name, **summary([r for r in rhos if r is not None])})
        levels[-1]["constant_maps"] = sum(r is None for r in rhos)
    return levels


# --------------------------------------------------------------------------- report


def faithfulness_record(
    method: str, n: int, requested: int, steps: int, curves: tuple, cascade: list[dict], start: float
) -> dict:
    """What ``metrics.json`` keeps: curves' AUCs against random maps, and the randomisation cascade.

    ``curves`` = (deletion, insertion, random deletion, random insertion), one curve per case.
    """
    deletion, insertion, random_deletion, random_insertion = curves
    return {
        "method": method,
        "n": n,
        "n_requested": requested,
        "target": "the predicted class (at the run's operating threshold)",
        "steps": steps,
        "deletion_auc": summary(curve_auc(deletion)),
        "insertion_auc": summary(curve_auc(insertion)),
        "random_deletion_auc": summary(curve_auc(random_deletion)),
        "random_insertion_auc": summary(curve_auc(random_insertion)),
        "randomisation_spearman": {k: cascade[-1][k] for k in ("mean", "sd")},
        "randomisation_cascade": cascade,
        "seconds": round(time.perf_counter() - start, 2),
    }


def summary(values: np.ndarray | list[float]) -> dict:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {"mean": None, "sd": None}
    return {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if values.size > 1 else 0.0}


def sample_cases(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` cases spread evenly over the classes (rare classes are not drowned out)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    interleaved = [
        idx[k] for k in range(max(map(len, per_class), default=0)) for idx in per_class if k < len(idx)
    ]
    return np.sort(np.asarray(interleaved[:n], dtype=np.int64))


@torch.no_grad()
def affordable_cases(model: nn.Module, example: torch.Tensor, steps: int, seconds: float) -> int:
    """How many cases fit in ``seconds``, from the time of one perturbation batch.

    A case costs about four such batches (two maps, deletion and insertion each) plus a few passes
    for the maps themselves: a 3D model at full width can need a minute for 32 cases.
    """
    batch = example.expand(steps + 1, *example.shape[1:])
    model.eval()(batch[:1])  # warm-up: the first call pays for allocation
    start = time.perf_counter()
    model(batch)
    per_case = 5 * (time.perf_counter() - start)
    return max(1, int(seconds / max(per_case, 1e-9)))


def faithfulness_report(
    trained: TrainedModel,
    images: np.ndarray,
    labels: np.ndarray,
    n: int = 32,
    seed: int = 0,
    method: str = "gradcam",
    steps: int = STEPS,
    time_budget_s: float | None = None,
) -> dict:
    """Deletion/insertion AUC (method vs a random map) and the randomisation check on ``n`` cases.

    With ``time_budget_s``, fewer cases (at least 4) are scored when ``n`` would not fit in it.
    """
    start, requested = time.perf_counter(), n
    if time_budget_s is not None:
        example = prepare_images(images[:1], trained.spec)
        n = min(n, max(4, affordable_cases(trained.model, example, steps, time_budget_s)))
    cases = sample_cases(labels, n, seed)
    inputs = prepare_images(images[cases], trained.spec)
    targets = predicted_classes(trained.predict_images(images[cases]), trained.threshold)
    maps = input_maps(trained.model, inputs, targets, method)
    noise = random_maps(maps.shape, np.random.default_rng(seed))
    deletion, insertion = perturbation_curves(trained.model, inputs, maps, targets, steps, seed)
    random_deletion, random_insertion = perturbation_curves(
        trained.model, inputs, noise, targets, steps, seed
    )
    cascade = randomisation_check(trained.model, inputs, targets, method, seed)
    curves = (deletion, insertion, random_deletion, random_insertion)
    return faithfulness_record(method, len(cases), requested, steps, curves, cascade, start)
