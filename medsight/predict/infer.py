"""The model's part of a prediction: probabilities, the class they call, and the map of that class.

When Grad-CAM is asked for (the usual case) of one model, one pass gives all three
(``explain.served.predict_and_gradcam``): for a model with an average-pooling and linear head, one
forward pass in ONNX Runtime (``optimize.class_maps``), else the eager model's forward and backward
pass. Otherwise the serving variant (ONNX, int8, an ensemble's mean) gives the probabilities, and the
eager models then draw the map of the class they call: an ensemble's map is its members' maps,
weighted as its probabilities are.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from medsight.predict.loaded import LoadedModel
from medsight.predict.timing import elapsed_ms


@dataclass
class Inferred:
    probabilities: np.ndarray  # (K,)
    class_index: int
    map: np.ndarray = field(repr=False)  # at the size asked for, in [0, 1]
    inference_ms: float  # the passes that gave the probabilities (the map too, when fused)
    explain_ms: float  # passes for the map alone


def predicted_class(probabilities: np.ndarray, threshold: float | None) -> int:
    """Binary models call the positive class at the validation threshold; others take the argmax."""
    if len(probabilities) == 2 and threshold is not None:
        return int(probabilities[1] >= threshold)
    return int(np.argmax(probabilities))


def infer(model: LoadedModel, image: np.ndarray, method: str, size: Sequence[int]) -> Inferred:
    """One conformed image (C, *spatial) through ``model``; the map comes at ``size``."""
    from medsight.explain.served import predict_and_gradcam, weighted_maps

    start = time.perf_counter()
    # Grad-CAM's pass gives the probabilities too, so the serving variant would only add a pass
    # (measured: 15 ms per request in all instead of 19 with int8 serving). It answers when no map is made
    # that way.
    if method == "gradcam" and not model.is_ensemble:
        found = predict_and_gradcam(
            model.trained, image, model.threshold, tta=model.tta, size=size, class_maps=model.class_maps
        )
        return Inferred(found.probabilities, found.target_class, found.map, elapsed_ms(start), 0.0)
    probabilities = np.asarray(model.serving.predict_images(image[None], tta=model.tta)[0])
    index = predicted_class(probabilities, model.threshold)
    inference_ms, start = elapsed_ms(start), time.perf_counter()
    heat = weighted_maps(model.members, model.weights, image, index, method, size)
    return Inferred(probabilities, index, heat, inference_ms, elapsed_ms(start))
