"""Models in service: a registered run or ensemble folder, loaded once, with what a prediction needs.

Three tasks are served (``served_task``): a classifier labels an image, a segmentation run draws a
mask (its ``segmenter``, the one ``medsight predict`` uses), an ECG beat model labels every beat of a
record (its ``trained`` model, whose inference info carries the beat settings).

A run answers with the fastest checked variant ``medsight bench`` recorded in ``serving.json`` (else
the eager model; a variant is loaded by the first request that uses it), with the test-time flips its
evaluation used, so the probability is the one the validation threshold was chosen on. An ensemble folder (``medsight ensemble``) answers with the
weighted mean of its members' probabilities and its own validation threshold. Explanations need
gradients, so they come from the eager models: the run's own, or every member of an ensemble.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medsight.data.prepare import InputSpec
from medsight.train.inference import TrainedModel, load_checkpoint, load_trained_model
from medsight.train.segmentation_inference import Segmenter, load_segmenter

ENSEMBLE_FILE = "ensemble.json"  # what marks an ensemble's folder (medsight.optimize.ensemble)


@dataclass
class LoadedModel:
    name: str
    version: str
    run_dir: Path
    members: list[TrainedModel]  # eager models: the run's, or each member of an ensemble
    weights: list[float]  # each member's share of the probabilities (and of the heatmap)
    serving: Any  # predict_images(images, tta=...): a LazyVariant, an Ensemble, or members[0]
    tta: bool
    threshold: float | None  # the operating point chosen on validation, for this run or ensemble
    class_maps: Any = None  # a checked ONNX Runtime pass: logits and Grad-CAM maps (optimize.class_maps)
    segmenter: Segmenter | None = None  # a segmentation run's model (then ``members`` is empty)

    @property
    def task(self) -> str:
        """classification, segmentation or ecg."""
        return "segmentation" if self.segmenter is not None else served_task(self.trained.info)

    @property
    def trained(self) -> TrainedModel:
        """The eager model whose input spec an upload is conformed to (an ensemble's first member)."""
        return self.members[0]

    @property
    def spec(self) -> InputSpec:
        return self.trained.spec

    @property
    def classes(self) -> list[str]:
        return list(self.trained.classes)

    @property
    def is_ensemble(self) -> bool:
        return len(self.members) > 1

    @property
    def heatmap_source(self) -> str:
        return describe_heatmap(len(self.members))


def describe_heatmap(n_members: int) -> str:
    """How the heatmap is made, as the model card and the README say it."""
    if n_members == 1:
        return "the model's own map"
    return f"the mean of the {n_members} members' maps, weighted as their probabilities are"


def heatmap_source(run_dir: Path) -> str:
    """``describe_heatmap`` for a run or ensemble folder, without loading any weights."""
    record = Path(run_dir) / ENSEMBLE_FILE
    return describe_heatmap(len(json.loads(record.read_text())["members"]) if record.is_file() else 1)


def served_task(info: dict[str, Any]) -> str:
    """What a model's inference info says it serves: segmentation, ecg (a beat model) or classification."""
    if info.get("task") == "segmentation":
        return "segmentation"
    return "ecg" if "ecg" in info else "classification"


def run_info(run_dir: Path) -> dict[str, Any]:
    """The inference info of a run's checkpoint (an ensemble's: its first member's)."""
    record = Path(run_dir) / ENSEMBLE_FILE
    if record.is_file():
        run_dir = Path(json.loads(record.read_text())["members"][0])
    return load_checkpoint(Path(run_dir) / "checkpoint.pt").get("inference") or {}


def is_segmentation_run(run_dir: Path) -> bool:
    """From the run's recorded config (cheap: no weights are read)."""
    try:
        config = yaml.safe_load((Path(run_dir) / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return False  # not a run folder (a registered model's name), or not one we can read: classify
    return (config.get("config") or config).get("task") == "segmentation"


def run_tta(run_dir: Path) -> bool:
    """Whether the run's evaluation averaged test-time flips (its threshold was chosen on those)."""
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except FileNotFoundError:
        return False
    return bool((config.get("config") or {}).get("tta"))


class LazyVariant:
    """A run's serving variant (an ONNX Runtime session, say), loaded on its first use.

    Grad-CAM requests, most of them, are answered by the class-map pass or the eager model and never
    use it, so start-up and memory pay for it only once an occlusion or no-heatmap request comes.
    Requests arrive on the server's threads: the lock makes their first use load it once."""

    def __init__(self, run_dir: Path, name: str) -> None:
        self.run_dir, self.name = run_dir, name
        self._variant: Any = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._variant is not None

    def variant(self) -> Any:
        if self._variant is None:
            with self._lock:
                if self._variant is None:
                    from medsight.optimize.predictors import load_variant

                    self._variant = load_variant(self.run_dir, self.name)
        return self._variant

    def predict_images(self, images: Any, **options: Any) -> Any:
        return self.variant().predict_images(images, **options)


def _serving_variant(run_dir: Path, trained: TrainedModel) -> Any:
    """The variant ``serving.json`` names, loaded when first used; the eager model itself when it names
    none or ``eager``."""
    from medsight.optimize.predictors import existing_variant_path, serving_variant_name

    name = serving_variant_name(run_dir)
    if name == "eager":
        return trained
    existing_variant_path(run_dir, name)  # a missing file is refused now, as an eager load would
    return LazyVariant(run_dir, name)


def _load_ensemble(run_dir: Path, name: str, version: str) -> LoadedModel:
    from medsight.optimize.ensemble import load_ensemble

    ensemble = load_ensemble(run_dir)
    return LoadedModel(
        name,
        version,
        run_dir,
        list(ensemble.members),
        list(ensemble.weights),
        ensemble,
        ensemble.tta,
        ensemble.threshold,
    )


def load_model(run_dir: Path, name: str, version: str) -> LoadedModel:
    """A run's or an ensemble's model for serving (a DataNotFoundError or BadInputError saying what is missing)."""
    run_dir = Path(run_dir)
    if (run_dir / ENSEMBLE_FILE).is_file():
        return _load_ensemble(run_dir, name, version)
    if is_segmentation_run(run_dir):
        segmenter = load_segmenter(run_dir)
        threshold = segmenter.threshold
        return LoadedModel(name, version, run_dir, [], [], segmenter, False, threshold, segmenter=segmenter)
    trained = load_trained_model(run_dir)
    serving = _serving_variant(run_dir, trained)
    loaded = LoadedModel(
        name, version, run_dir, [trained], [1.0], serving, run_tta(run_dir), trained.threshold
    )
    loaded.class_maps = _class_map_pass(trained)
    return loaded


def _class_map_pass(trained: TrainedModel) -> Any:
    """Heatmap requests (most of them) run on this pass when the model has the head it needs."""
    # the test ``models.registry.has_class_map_head`` makes for the model card, here on the loaded model
    if not hasattr(trained.model, "logits_and_class_maps"):
        return None  # no need to load the exporter
    import torch

    from medsight.optimize.class_maps import class_map_pass

    return class_map_pass(trained.model, trained.spec, threads=torch.get_num_threads())
