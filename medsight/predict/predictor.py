"""One prediction: bytes in, label + probabilities + heatmap out. The API and ``medsight predict`` both call
``Predictor.predict_file``, so a file gets the same answer whichever door it came through.

A model is loaded once per (name, version) and kept: the fastest checked variant ``medsight bench``
recorded in ``serving.json`` answers (else the eager model), with the test-time flips its evaluation
used, so the probability is the one the validation threshold was chosen on. Explanations need
gradients, so they always come from the eager model, for the class the prediction names.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from medsight.data.prepare import InputSpec
from medsight.errors import ConfigError
from medsight.predict.conform import conform, display_copy
from medsight.predict.decode import Decoded, Limits, decode_upload, safe_name
from medsight.train.inference import TrainedModel, load_trained_model

EXPLAIN_METHODS = ("gradcam", "occlusion")


@dataclass
class LoadedModel:
    name: str
    version: str
    run_dir: Path
    trained: TrainedModel  # eager: explanations need gradients
    serving: Any  # has predict_images(images, tta=...): a ServableModel variant or ``trained`` itself
    tta: bool

    @property
    def spec(self) -> InputSpec:
        return self.trained.spec

    @property
    def classes(self) -> list[str]:
        return list(self.trained.classes)

    @property
    def threshold(self) -> float | None:
        return self.trained.threshold


@dataclass
class Prediction:
    label: str
    class_index: int
    classes: list[str]
    probabilities: list[float]
    threshold: float | None
    model: dict[str, str]  # {"name", "version"}
    timing_ms: dict[str, float]
    heatmap: np.ndarray = field(repr=False)  # the map at the (display) image's size, in [0, 1]
    heatmap_png: bytes = field(repr=False)
    overlay_png: bytes = field(repr=False)
    explain_method: str = "gradcam"
    source: Decoded | None = field(default=None, repr=False)


def _tta(run_dir: Path) -> bool:
    """Whether the run's evaluation averaged test-time flips (its threshold was chosen on those)."""
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except FileNotFoundError:
        return False
    return bool((config.get("config") or {}).get("tta"))


def load_model(run_dir: Path, name: str, version: str) -> LoadedModel:
    """The run's model for serving: its ``serving.json`` variant when there is one, else eager."""
    run_dir = Path(run_dir)
    trained = load_trained_model(run_dir)
    serving: Any = trained
    if (run_dir / "serving.json").is_file():
        from medsight.optimize.predictors import load_serving_model

        serving = load_serving_model(run_dir)
    return LoadedModel(name, version, run_dir, trained, serving, _tta(run_dir))


def predicted_class(probabilities: np.ndarray, threshold: float | None) -> int:
    """Binary models call the positive class at the validation threshold; others take the argmax."""
    if len(probabilities) == 2 and threshold is not None:
        return int(probabilities[1] >= threshold)
    return int(np.argmax(probabilities))


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


class Predictor:
    """Predictions with models cached by (name, version); safe to share between threads."""

    def __init__(self, limits: Limits | None = None, max_models: int = 4) -> None:
        self.limits = limits or Limits()
        self.max_models = max_models
        self._models: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def model(self, name: str, version: str, run_path: str | Path) -> LoadedModel:
        """The loaded model, from the cache when it was loaded before (the oldest is dropped past the cap)."""
        key = (name, version)
        with self._lock:  # one load per model even when requests for it arrive together
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            loaded = load_model(Path(run_path), name, version)
            self._models[key] = loaded
            while len(self._models) > self.max_models:
                self._models.popitem(last=False)
            return loaded

    def predict_file(
        self, data: bytes, filename_hint: str | None, model: LoadedModel, explain: str = "gradcam"
    ) -> Prediction:
        """Decode (content-sniffed, within limits), conform to the model, predict and explain."""
        from medsight.explain import explain as explain_image
        from medsight.explain import map_png, overlay_png

        if explain not in EXPLAIN_METHODS:
            raise ConfigError(f"unknown explanation {explain!r}; choose {' or '.join(EXPLAIN_METHODS)}.")
        start = time.perf_counter()
        decoded = decode_upload(data, self.limits, filename_hint)
        image = conform(decoded.image, model.spec, safe_name(filename_hint))
        preprocess = _ms(start)
        start = time.perf_counter()
        probabilities = model.serving.predict_images(image[None], tta=model.tta)[0]
        index = predicted_class(probabilities, model.threshold)
        inference = _ms(start)
        start = time.perf_counter()
        shown = display_copy(image)
        explanation = explain_image(model.trained, shown, explain, target_class=index)
        overlay, heatmap_png = overlay_png(shown, explanation.map), map_png(explanation.map)
        return Prediction(
            label=model.classes[index],
            class_index=index,
            classes=model.classes,
            probabilities=[float(p) for p in probabilities],
            threshold=model.threshold,
            model={"name": model.name, "version": model.version},
            timing_ms={"preprocess": preprocess, "inference": inference, "explain": _ms(start)},
            heatmap=explanation.map,
            heatmap_png=heatmap_png,
            overlay_png=overlay,
            explain_method=explain,
            source=decoded,
        )
