"""What every optimisation step shares: the run it works on, its data, threads, safe file writes.

``OptimizeRun`` loads a run's model once and its data set only when a step needs it, so that a
refusal (missing checkpoint, data set gone) comes before anything is written.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from medsight.data.dataset import ImageDataset
from medsight.data.prepare import prepare_images
from medsight.data.registry import load_dataset
from medsight.errors import DataNotFoundError, MedsightError
from medsight.train.inference import TrainedModel, load_trained_model
from medsight.train.inputs import model_input

Log = Callable[[str], None]
EXPORTS = "exports"
VARIANTS = "variants"


class OptimizeError(MedsightError):
    """An optimised model failed its check or cannot be made from this run; nothing was written."""


def cpu_threads() -> int:
    return os.cpu_count() or 1


def use_all_cores() -> int:
    """Same thread count for torch and ONNX Runtime, so variants are compared fairly."""
    threads = cpu_threads()
    torch.set_num_threads(threads)
    return threads


@dataclass
class OptimizeRun:
    run_dir: Path
    trained: TrainedModel
    config: dict[str, Any]
    _dataset: ImageDataset | None = None
    _inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)  # figures computed once per command

    @property
    def dataset_name(self) -> str:
        return str(self.config.get("dataset") or self.trained.info.get("dataset"))

    @property
    def n_boot(self) -> int:
        return int(self.config.get("bootstrap", 1000))

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    def dataset(self, purpose: str) -> ImageDataset:
        """The run's data set, or an error that says which step needed it and why."""
        if self._dataset is None:
            try:
                self._dataset = load_dataset(self.dataset_name)
            except DataNotFoundError as err:
                raise DataNotFoundError(f"cannot {purpose}: {err}") from err
        return self._dataset

    def inputs(self, split: str, purpose: str = "check the model") -> torch.Tensor | dict[str, torch.Tensor]:
        """Standardised network inputs of a split, prepared once (as in training); a fusion model's
        are ``{"image", "tabular"}`` (``medsight/train/inputs.py``)."""
        if split not in self._inputs:
            data = self.dataset(purpose).splits[split]
            tabular = self.trained.check_tabular(data.tabular, len(data))  # None: the image alone
            self._inputs[split] = model_input(prepare_images(data.images, self.trained.spec), tabular)
        return self._inputs[split]

    def labels(self, split: str) -> np.ndarray:
        return np.asarray(self.dataset("evaluate the model").splits[split].labels)


def require_image_only(run: OptimizeRun, step: str) -> None:
    """Refuse a step not yet made for fusion models (two inputs) or several labels, before any write."""
    if run.trained.tabular is not None or run.trained.heads:
        kind = "reads tabular features" if run.trained.tabular is not None else "has several labels"
        raise OptimizeError(
            f"{run.run_dir}: this model {kind}; {step} covers image-only, one-label models for now "
            "(`medsight export` handles fusion models)."
        )


def open_run(run_dir: Path) -> OptimizeRun:
    """Load a trained run (checkpoint first: a missing or corrupt one is refused at once)."""
    run_dir = Path(run_dir)
    trained = load_trained_model(run_dir)
    config: dict[str, Any] = {}
    if (run_dir / "config.yaml").exists():
        config = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("config", {})
    return OptimizeRun(run_dir, trained, config)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


@contextlib.contextmanager
def staged_file(final: Path) -> Iterator[Path]:
    """A temporary path beside ``final``; renamed onto it only if the block ends without error.

    The folder is created if needed and removed again if the block fails and left it empty, so a
    refused step leaves nothing behind.
    """
    created = not final.parent.exists()
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=final.suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        tmp.chmod(0o666 & ~_umask())  # mkstemp makes files private; a model file is not a secret
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                final.parent.rmdir()  # only if empty
        raise


@contextlib.contextmanager
def staged_folder(final: Path) -> Iterator[Path]:
    """A temporary folder beside ``final`` that replaces it only when the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
    try:
        yield tmp
        tmp.chmod(0o777 & ~_umask())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: Path, data: Any) -> None:
    """Atomic, and readable by others (these are reports, not secrets)."""
    with staged_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2))


def file_mb(path: Path) -> float:
    return path.stat().st_size / 1e6


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)
