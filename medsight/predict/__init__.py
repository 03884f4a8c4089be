"""Predictions in service: between ``optimize`` (which variant is fastest) and ``serve`` (HTTP).

- ``decode``: bytes -> image, format sniffed from the content, byte and pixel limits before decoding.
- ``conform``: the image brought to the model's ``InputSpec`` (dimensions, channels, value range).
- ``loaded``: a run or an ensemble folder loaded for serving (``load_model``).
- ``infer``: probabilities, the class they call and its map, in one pass when it can.
- ``predictor``: ``Predictor.predict_file`` (models cached by name and version): label,
  probabilities, threshold, timing, Grad-CAM or occlusion heatmap and overlay PNG.
- ``service``: what the API adds: the registry's model, DICOM ingested, results stored and audited.
- ``dicom_results``: the result as a Comprehensive SR and the overlay as a Secondary Capture.
- ``registration``: ``medsight models register``: a complete run becomes a versioned model with a card.
"""

from medsight.predict.decode import Limits
from medsight.predict.predictor import LoadedModel, Prediction, Predictor, load_model

__all__ = ["Limits", "LoadedModel", "Prediction", "Predictor", "load_model"]
