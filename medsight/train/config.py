"""The typed, printable training configuration.

Every field may be set in a YAML file (``--config``) or by a flag; ``None`` (or "auto") means
"derive it from the data" (see ``defaults.py``). A run records the fully resolved config.
Unknown keys are refused with the list of valid ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from medsight.errors import ConfigError, validation_error


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    dataset: str = Field(description="data set name (see `medsight data list`)")
    task: str = Field("classification", description="what to learn: classification or segmentation")
    task_options: dict[str, Any] = Field(
        default_factory=dict, description="settings only one task knows (e.g. segmentation patch size)"
    )
    seed: int = 0
    # model
    model: str = "compact-resnet"
    model_options: dict[str, Any] = Field(default_factory=dict)
    # data
    image_size: int | None = Field(
        None, ge=8, le=512, description="side of the network input; None: from data"
    )
    intensity: str | None = Field(
        None, description="scale, minmax, zscore, ct-<window>, none; None: from data"
    )
    denoise: Literal["none", "median", "gaussian"] = "none"
    augment: Literal["none", "light", "standard", "strong"] | None = None
    # optimisation
    epochs: int | None = Field(None, ge=1, le=1000)
    time_budget_min: float | None = Field(
        None, gt=0, description="stop starting epochs after this many minutes"
    )
    batch_size: int | None = Field(None, ge=1, le=4096)
    optimizer: Literal["adamw", "sgd", "rmsprop"] = "adamw"
    lr: float | None = Field(None, gt=0, lt=10)
    weight_decay: float | None = Field(None, ge=0, description="AdamW/SGD weight decay; None: from data")
    schedule: Literal["onecycle", "cosine", "step", "constant"] = "onecycle"
    loss: Literal["ce", "focal"] = "ce"
    label_smoothing: float | None = Field(None, ge=0, lt=1, description="None: from data")
    focal_gamma: float = Field(2.0, ge=0)
    class_weights: Literal["auto", "balanced", "none"] = "auto"
    grad_clip: float | None = Field(5.0, gt=0)
    ema_decay: float | None = Field(None, ge=0, lt=1, description="weight EMA; None: from data, 0: off")
    early_stopping_patience: int | None = Field(None, ge=1)
    swa_start: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="average weights from this fraction of the epochs on; 0: off; None: from data",
    )
    monitor: Literal["auc", "loss"] = "auc"
    # evaluation
    threshold_rule: str = Field(
        "youden",
        description="how the operating threshold is chosen on validation: youden, accuracy, f1, or "
        "sensitivity:<target> (the most specific threshold that finds that share of positives)",
    )
    tta: bool | None = Field(None, description="test-time flips where anatomy allows; None: from data")
    bootstrap: int = Field(1000, ge=0)
    # differential privacy (Opacus; see privacy.py): off unless dp_epsilon is set
    dp_epsilon: float | None = Field(
        None,
        gt=0,
        le=100,  # beyond ~10 the guarantee means little; beyond 100 the noise calibration itself takes minutes
        description="train with differential privacy to this ε (0 < ε ≤ 100); None: off",
    )
    dp_delta: float | None = Field(
        None, gt=0, lt=1, description="DP δ, below 1/n_train; None: a power of ten below 1/(10 n_train)"
    )
    dp_max_grad_norm: float | None = Field(
        None, gt=0, description="DP per-sample gradient clipping norm; None: 1.0 under DP"
    )
    # machine
    device: str = "auto"
    num_threads: int | None = Field(None, ge=1)
    num_workers: int | None = Field(None, ge=0)

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        from medsight.train.tasks import TASKS

        if value not in TASKS:
            raise ValueError(f"choose one of {', '.join(TASKS)}")
        return value

    @field_validator("intensity")
    @classmethod
    def _known_intensity(cls, value: str | None) -> str | None:
        from medsight.data.transforms import INTENSITY_PRESETS

        if value not in (None, *INTENSITY_PRESETS):
            raise ValueError(f"choose one of {', '.join(INTENSITY_PRESETS)}")
        return value

    @field_validator("threshold_rule")
    @classmethod
    def _known_threshold_rule(cls, value: str) -> str:
        from medsight.evaluate.metrics import sensitivity_target

        try:
            sensitivity_target(value)
        except ConfigError as err:
            raise ValueError(str(err)) from None
        return value

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def config_error(err: ValidationError) -> ConfigError:
    """Turn pydantic's report into one message that names the key and the valid ones."""
    return validation_error(err, list(TrainConfig.model_fields), "config key")


def load_config(path: Path | None, overrides: dict[str, Any]) -> TrainConfig:
    """A YAML file (optional) with flag overrides on top; flags left at None do not override."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError as err:
            raise ConfigError(f"config file {path} not found.") from err
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from err
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of key: value.")
        values.update(loaded)
    values.update({k: v for k, v in overrides.items() if v is not None})
    values = {k: (None if v == "auto" and k != "class_weights" else v) for k, v in values.items()}
    if "dataset" not in values:
        raise ConfigError("no data set given: pass --dataset NAME (see `medsight data list`).")
    try:
        return TrainConfig(**values)
    except ValidationError as err:
        raise config_error(err) from err
