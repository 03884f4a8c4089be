"""Saliency over time for 1D signal classifiers (ECG beats), with the same faithfulness checks.

Grad-CAM needs a convolutional layer whose positions still map onto the input; a recurrent
network has none, and a 1D CNN's last stage is eight times coarser than the beat. So 1D models
are explained by occlusion along time (Zeiler & Fergus, ECCV 2014): a short window of the
signal is replaced by the beat's own mean level, slid along the beat, and the drop in the
probability of the predicted class is that stretch's importance. Only channels that vary in
time are covered; constant channels (the RR context) are left as they are, since "when" has no
meaning for them. Faithfulness: deletion and insertion along time against a random map of the
same smoothness (Petsiuk et al., BMVC 2018), and the weight-randomisation check (Adebayo et al.,
NeurIPS 2018), as for images (``faithfulness.py``).
"""

from __future__ import annotations

import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: headless servers and CI have no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from medsight.data.dataset import ImageDataset  # noqa: E402
from medsight.data.prepare import prepare_images  # noqa: E402
from medsight.evaluate.ecg import strip_view  # noqa: E402
from medsight.evaluate.plots import save_figure  # noqa: E402
from medsight.explain.faithfulness import (  # noqa: E402
    CASCADE,
    STEPS,
    faithfulness_record,
    perturbation_curves,
    randomised_copy,
    rank_correlation,
    sample_cases,
    summary,
)
from medsight.explain.maps import predicted_classes  # noqa: E402
from medsight.train.inference import TrainedModel  # noqa: E402

METHOD = "occlusion over time"
WINDOW_S = 0.05  # 50 ms: about half a QRS complex
STRIDE = 3
DEFAULT_FS = 360.0  # signals whose data set does not say their rate: MIT-BIH's


def _varying(inputs: torch.Tensor) -> torch.Tensor:
    """(N, C, 1) True where a channel changes along time."""
    return (inputs.amax(dim=-1, keepdim=True) != inputs.amin(dim=-1, keepdim=True)).float()


@torch.no_grad()
def occlusion_over_time(
    model: nn.Module, inputs: torch.Tensor, targets: np.ndarray, window: int = 18, stride: int = STRIDE
) -> np.ndarray:
    """(N, L) maps, peak 1: how much the target probability drops when each stretch is hidden."""
    model.eval()
    n, _, length = inputs.shape
    starts = list(range(0, max(1, length - window + 1), stride))
    maps = np.zeros((n, length), dtype=np.float64)
    for i in range(n):
        x = inputs[i : i + 1]
        base = torch.softmax(model(x), dim=1)[0, int(targets[i])]
        mask = torch.zeros(len(starts), 1, length)
        for k, s in enumerate(starts):
            mask[k, 0, s : s + window] = 1.0
        mask = mask * _varying(x)  # (windows, C, L): constant channels never covered
        occluded = x * (1 - mask) + x.mean(dim=-1, keepdim=True) * mask
        drop = (base - torch.softmax(model(occluded), dim=1)[:, int(targets[i])]).clamp_min(0).numpy()
        cover = np.zeros(length)
        for k, s in enumerate(starts):  # each sample: mean drop of the windows that covered it
            maps[i, s : s + window] += drop[k]
            cover[s : s + window] += 1
        maps[i] /= np.maximum(cover, 1)
    peak = maps.max(axis=1, keepdims=True)
    return np.divide(maps, peak, out=np.zeros_like(maps), where=peak > 0).astype(np.float32)


def time_maps(
    trained: TrainedModel,
    inputs: torch.Tensor,
    targets: np.ndarray,
    fs: float,
    model: nn.Module | None = None,
) -> np.ndarray:
    """Occlusion maps with a window of ``WINDOW_S`` at the signal's rate ``fs``."""
    return occlusion_over_time(model or trained.model, inputs, targets, window=max(3, round(WINDOW_S * fs)))


def affordable_beats(trained: TrainedModel, example: np.ndarray, fs: float, seconds: float) -> int:
    """How many beats the faithfulness checks can score in ``seconds``: one map costs about a sixth
    of a beat's share (five maps in the randomisation cascade, then deletion and insertion)."""
    inputs = prepare_images(example, trained.spec)
    time_maps(trained, inputs, np.zeros(1, np.int64), fs)  # warm-up: the first call pays for allocation
    start = time.perf_counter()
    time_maps(trained, inputs, np.zeros(1, np.int64), fs)
    return max(4, int(seconds / max(6 * (time.perf_counter() - start), 1e-9)))


def random_time_maps(n: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """Noise on a grid of a quarter of the length, linearly upsampled: as smooth as an occlusion map."""
    coarse = rng.uniform(size=(n, max(2, length // 4)))
    grid = np.linspace(0, coarse.shape[1] - 1, length)
    return np.stack([np.interp(grid, np.arange(coarse.shape[1]), row) for row in coarse]).astype(np.float32)


def faithfulness_over_time(
    trained: TrainedModel, images: np.ndarray, labels: np.ndarray, fs: float, n: int = 32, seed: int = 0
) -> dict:
    """Deletion/insertion AUC (occlusion vs random) and the randomisation cascade on ``n`` beats."""
    start = time.perf_counter()
    cases = sample_cases(labels, n, seed)
    inputs = prepare_images(images[cases], trained.spec)
    targets = predicted_classes(trained.predict_images(images[cases]), trained.threshold)
    maps = time_maps(trained, inputs, targets, fs)
    noise = random_time_maps(len(cases), inputs.shape[-1], np.random.default_rng(seed))
    deletion, insertion = perturbation_curves(trained.model, inputs, maps, targets, STEPS, seed)
    rand_del, rand_ins = perturbation_curves(trained.model, inputs, noise, targets, STEPS, seed)
    cascade = []
    for name, fraction in CASCADE:
        randomised = time_maps(trained, inputs, targets, fs, randomised_copy(trained.model, fraction, seed))
        rhos = [rank_correlation(o, r) for o, r in zip(maps, randomised, strict=True)]
        cascade.append(
            {
                "randomised": name,
                **summary([r for r in rhos if r is not None]),
                "constant_maps": rhos.count(None),
            }
        )
    curves = (deletion, insertion, rand_del, rand_ins)
    return faithfulness_record(METHOD, len(cases), n, STEPS, curves, cascade, start)


def plot_time_explanations(
    images: np.ndarray,
    maps: dict[str, np.ndarray],
    cases: dict[str, np.ndarray],
    captions: list[str],
    path: Path,
) -> Path:
    """Each beat's first channel, coloured by its saliency (red = what the decision rested on)."""
    per_group = max(1, max(len(c) for c in cases.values()))
    fig, axes = plt.subplots(2, per_group, figsize=(2.8 * per_group, 5.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for g, (name, chosen) in enumerate(cases.items()):
        if len(chosen) == 0:
            axes[g, 0].text(0.5, 0.5, f"no {name} cases", ha="center", va="center")
        for col, case in enumerate(chosen):
            ax, trace, weight = axes[g, col], images[case, 0], maps[name][col]
            ax.axis("on")
            ax.plot(trace, color="0.6", linewidth=0.7)
            ax.scatter(np.arange(len(trace)), trace, c=weight, cmap="jet", vmin=0, vmax=1, s=4)
            ax.set_title(
                f"{name}\n{captions[case]}", fontsize=8, color="darkgreen" if name == "correct" else "darkred"
            )
            ax.set_xticks([])
            ax.set_yticks([])
    return save_figure(fig, path)


def saliency_strip(
    trained: TrainedModel, dataset: ImageDataset, split: str, probs: np.ndarray, path: Path
) -> Path:
    """The report's strip (``evaluate/ecg.py``) with each beat's occlusion map drawn under it."""
    view = strip_view(dataset, split, probs, trained.threshold)
    shown = view.in_strip()
    rows = view.rows[shown]
    images = dataset.splits[split].images[rows]
    targets = predicted_classes(probs[rows], trained.threshold)
    maps = time_maps(trained, prepare_images(images, trained.spec), targets, view.settings.fs)
    saliency = dict(zip(shown.tolist(), maps, strict=True))
    title = f"{view.title}: beats and what each call rested on ({METHOD}, predicted class)"
    return view.draw(path, title, saliency)


def time_explanation_figures(
    run_dir: Path,
    trained: TrainedModel,
    dataset: ImageDataset,
    split: str,
    probs: np.ndarray,
    cases: dict[str, np.ndarray],
    n: int = 32,
    seed: int = 0,
    time_budget_s: float | None = None,
) -> tuple[dict[str, Path], dict]:
    """``plots/explanations.png`` for 1D runs and the faithfulness block (see module docstring); for
    ECG beats of whole records also ``plots/ecg_saliency.png``, the strip with saliency under each beat.

    ``time_budget_s`` scores fewer beats (at least 4) when ``n`` would take longer.
    """
    images, labels = dataset.splits[split].images, np.asarray(dataset.splits[split].labels)
    fs = float(dataset.extra.get("ecg", {}).get("settings", {}).get("fs", DEFAULT_FS))
    predicted = predicted_classes(probs, trained.threshold)
    confidence = probs[np.arange(len(probs)), predicted]
    maps = {
        name: time_maps(trained, prepare_images(images[idx], trained.spec), predicted[idx], fs)
        if len(idx)
        else []
        for name, idx in cases.items()
    }
    captions = [
        f"true {dataset.classes[t]}\npred {dataset.classes[p]} p={c:.2f}"
        for t, p, c in zip(labels, predicted, confidence, strict=True)
    ]
    path = plot_time_explanations(images, maps, cases, captions, Path(run_dir) / "plots" / "explanations.png")
    figures = {"explanations": path}
    if "record_paths" in dataset.extra.get("ecg", {}):  # beats of whole records: a strip can be drawn
        strip = Path(run_dir) / "plots" / "ecg_saliency.png"
        figures["ecg_saliency"] = saliency_strip(trained, dataset, split, probs, strip)
    if time_budget_s is not None:
        n = min(n, affordable_beats(trained, images[:1], fs, time_budget_s))
    scores = faithfulness_over_time(trained, images, labels, fs, n=n, seed=seed)
    return figures, {**scores, "split": split}
