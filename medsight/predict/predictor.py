"""One prediction: bytes in, label + probabilities + heatmap out. The API and ``medsight predict`` both call
``Predictor.predict_file``, so a file gets the same answer whichever door it came through.

A model (a run or an ensemble, ``loaded``) is loaded once per (name, version) and kept; ``infer`` gives
its probabilities and the map of the class they call, in one pass when it can.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medsight.errors import ConfigError
from medsight.io.volume import Volume
from medsight.predict.conform import conform, display_copy
from medsight.predict.decode import Decoded, Limits, decode_upload, safe_name
from medsight.predict.infer import infer
from medsight.predict.loaded import LoadedModel, load_model
from medsight.predict.series import volume_input
from medsight.predict.tabular import with_patient_values
from medsight.predict.timing import elapsed_ms

EXPLAIN_METHODS = ("gradcam", "occlusion")


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
    notes: list[str] = field(default_factory=list)  # e.g. a fusion model's imputed tabular values


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
        self,
        data: bytes,
        filename_hint: str | None,
        model: LoadedModel,
        explain: str = "gradcam",
        tabular: Mapping[str, object] | None = None,
    ) -> Prediction:
        """Decode (content-sniffed, within limits), conform to the model, predict and explain.

        ``tabular``: a fusion model's patient values beside the image (``predict/tabular.py``).
        """
        _check_method(explain)
        model, notes = with_patient_values(model, tabular)  # an image-only model: itself, no notes
        start = time.perf_counter()
        decoded = decode_upload(data, self.limits, filename_hint)
        image = conform(decoded.image, model.spec, safe_name(filename_hint))
        prediction = self.predict_conformed(image, model, explain, elapsed_ms(start), decoded)
        prediction.notes = notes
        return prediction

    def predict_volume(self, volume: Volume, model: LoadedModel, explain: str = "gradcam") -> Prediction:
        """A whole volume (e.g. a stored DICOM series) brought to a 3D model's input size, predicted, explained."""
        _check_method(explain)
        start = time.perf_counter()
        image = volume_input(volume, model.spec, "the series")
        source = Decoded(volume.to_image(), "dicom-series", hashlib.sha256(image.tobytes()).hexdigest())
        return self.predict_conformed(image, model, explain, elapsed_ms(start), source)

    def predict_conformed(
        self, image: np.ndarray, model: LoadedModel, explain: str, preprocess_ms: float, source: Decoded
    ) -> Prediction:
        """Predict and explain one image already in the model's dimensions, channels and value type."""
        from medsight.explain import map_png, overlay_png

        shown = display_copy(image)
        inferred = infer(model, image, explain, shown.shape[1:])
        start = time.perf_counter()
        overlay, heatmap_png = overlay_png(shown, inferred.map), map_png(inferred.map)
        index = inferred.class_index
        return Prediction(
            label=model.classes[index],
            class_index=index,
            classes=model.classes,
            probabilities=[float(p) for p in inferred.probabilities],
            threshold=model.threshold,
            model={"name": model.name, "version": model.version},
            timing_ms={
                "preprocess": preprocess_ms,
                "inference": inferred.inference_ms,
                "explain": round(inferred.explain_ms + elapsed_ms(start), 2),
            },
            heatmap=inferred.map,
            heatmap_png=heatmap_png,
            overlay_png=overlay,
            explain_method=explain,
            source=source,
        )


def _check_method(explain: str) -> None:
    if explain not in EXPLAIN_METHODS:
        raise ConfigError(f"unknown explanation {explain!r}; choose {' or '.join(EXPLAIN_METHODS)}.")
