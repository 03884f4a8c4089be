"""Serving a fusion model: the patient's tabular values (age, sex, a lab value) beside the image.

The values arrive raw (``{"age": "63", "sex": "F", "lab": ""}``) and are encoded exactly as the
training rows were (the run's ``TabularSpec``: training-split mean and sd, training categories).
The model is then served with those values held fixed (``TrainedModel.with_tabular``): an
image-only model for this one request, so the prediction and its Grad-CAM of the image branch go
the usual way. A missing value is imputed as in training and said in a note, never silently.
The eager model answers (exported variants of a fusion model take two inputs; see ``optimize``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from medsight.errors import BadInputError, ConfigError
from medsight.predict.loaded import LoadedModel


def with_patient_values(
    model: LoadedModel, values: Mapping[str, object] | None
) -> tuple[LoadedModel, list[str]]:
    """``model`` ready for one request, and notes on what was imputed (none for image-only models)."""
    if model.trained.heads:
        raise ConfigError(
            f"model '{model.name}' has several labels ({', '.join(model.trained.heads)}); serving covers "
            "one-label models for now."
        )
    spec = model.trained.tabular
    if spec is None:
        if values:
            raise BadInputError(f"model '{model.name}' reads the image alone; it takes no tabular values.")
        return model, []
    if model.is_ensemble:
        raise ConfigError("ensembles of fusion models are not served yet; register a single run.")
    if values is None:
        raise BadInputError(
            f"model '{model.name}' also reads the patient's {', '.join(c.name for c in spec.columns)}; "
            "give them with the image (an empty value when one is unknown)."
        )
    row, notes = spec.encode_row(values)
    bound = model.trained.with_tabular(row[0])
    return dataclasses.replace(model, members=[bound], serving=bound), notes
