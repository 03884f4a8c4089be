"""The learning problems the engine trains, by the name ``TrainConfig.task`` gives.

Each entry says how to load the task's data (``load``), fill the settings the user left open from
that data (``resolve``: the config and the fingerprint it was derived from, recorded in the run),
count its training examples (``n_train``, for the DP accountant), and prepare the ``Task`` the
engine runs (``build``; see ``medsight/train/task.py``).
"""

from __future__ import annotations

from medsight.train.tasks.classification import Classification
from medsight.train.tasks.segmentation import Segmentation

TASKS = {
    "classification": Classification,
    "segmentation": Segmentation,
}
