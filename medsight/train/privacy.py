"""Differentially private training (DP-SGD with Opacus).

With ``dp_epsilon`` set, every optimiser step clips each sample's gradient to ``dp_max_grad_norm``
and adds Gaussian noise calibrated so that the run's planned epochs of Poisson-sampled batches spend
at most ε at δ. Opacus' accountant tracks the ε actually spent (less when training stops early); the
run records it in run.json, metrics.json and the report.

BatchNorm mixes the samples of a batch, so a sample's own gradient is not defined with it: models
are made DP-compatible first (compact-resnet with GroupNorm; others by Opacus' ModuleValidator.fix,
recorded in the checkpoint so inference rebuilds the same architecture). The engine's weight EMA,
global gradient clipping and class weights are off under DP: per-sample clipping replaces global
clipping; an EMA of the noisy weights would be private too but is fiddly to keep in step with Opacus'
wrapped module; and class-weighted cross-entropy divides by the batch's summed weights, so one
sample's gradient would depend on the other samples' labels, which per-sample clipping cannot bound.
Not covered by ε: the input standardisation (mean and std of the training images) and the defaults
derived from the data's size and shape, computed before training without noise.

Resume is exact under DP: the Poisson sampler draws from the epoch's seeded loader generator, the
noise from the torch RNG that the engine re-seeds every epoch, and the accountant's history is saved
in the checkpoint and restored (the noise multiplier is recomputed from the same config and data).
Noise from a seeded pseudo-random generator is fine for research; Opacus' ``secure_mode`` (a
cryptographic RNG) would be needed against an attacker who can reconstruct that RNG's state.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from medsight.errors import ConfigError
from medsight.train.config import TrainConfig

ACCOUNTANT = "prv"  # Opacus' default: privacy random variables, tighter than RDP for the same noise
DEFAULT_MAX_GRAD_NORM = 1.0
MODULE_FIX = "opacus.ModuleValidator.fix"


def default_delta(n_train: int) -> float:
    """The largest power of ten at or below 1/(10 n): a record leaks outright with probability ≪ 1/n."""
    return 10.0 ** math.floor(math.log10(1 / (10 * n_train)))


def check_world(config: TrainConfig, world_size: int) -> None:
    if config.dp_epsilon is not None and world_size > 1:
        raise ConfigError(
            "differential privacy (--dp-epsilon) with more than one process (--nproc, torchrun) is not "
            "supported yet: train privately with one process."
        )


def resolve(config: TrainConfig, n_train: int, world_size: int) -> TrainConfig:
    """Fill and check the DP settings; a no-op (the same object) when DP is off."""
    if config.dp_epsilon is None:
        return config
    check_world(config, world_size)
    delta = config.dp_delta or default_delta(n_train)
    if delta >= 1 / n_train:
        raise ConfigError(
            f"dp_delta {delta:g} is not below 1/n_train = 1/{n_train} = {1 / n_train:.2g}: a mechanism "
            "that publishes one whole training record at random is (0, 1/n)-private, so δ must be far "
            f"smaller. Leave it unset (default here {default_delta(n_train):g}) or choose a smaller δ."
        )
    options = dict(config.model_options)
    if config.model == "compact-resnet":
        if options.get("norm", "group") != "group":
            raise ConfigError(
                "model_options.norm must be 'group' under differential privacy: BatchNorm mixes the "
                "samples of a batch, so per-sample gradients are not defined. Leave norm unset."
            )
        options["norm"] = "group"
    return config.model_copy(
        update={
            "dp_delta": delta,
            "dp_max_grad_norm": config.dp_max_grad_norm or DEFAULT_MAX_GRAD_NORM,
            "model_options": options,
            "ema_decay": 0.0,
            "grad_clip": None,
            "class_weights": "none",
        }
    )


def needs_module_fix(config: TrainConfig) -> bool:
    return config.dp_epsilon is not None and config.model != "compact-resnet"


def fix_module(model: nn.Module) -> nn.Module:
    """Opacus' replacement of layers DP cannot use (BatchNorm -> GroupNorm); also used by inference."""
    from opacus.validators import ModuleValidator

    return ModuleValidator.fix(model)


def make_compatible(model: nn.Module, config: TrainConfig) -> nn.Module:
    """The model DP can train: no BatchNorm, and no in-place activations (they would overwrite the
    outputs Opacus' per-sample gradient hooks hold on to). A no-op when DP is off."""
    if config.dp_epsilon is None:
        return model
    if needs_module_fix(config):
        model = fix_module(model)
    for module in model.modules():
        if getattr(module, "inplace", False) is True:
            module.inplace = False
    return model


def inference_extra(config: TrainConfig) -> dict[str, Any]:
    """What the checkpoint must say for ``load_trained_model`` to rebuild the same architecture."""
    return {"dp_module_fix": MODULE_FIX} if needs_module_fix(config) else {}


class PrivateTraining:
    """Opacus' engine around one run's model and optimiser.

    ``module`` (the model with per-sample gradient hooks) is what the engine runs forward, and
    ``optimizer`` (clip, add noise, step, account) what it steps; the engine keeps saving the plain
    model and the wrapped optimiser's state, so checkpoints look the same as without DP.
    """

    def __init__(
        self,
        config: TrainConfig,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loader: torch.utils.data.DataLoader,
        log: Callable[[str], None],
    ) -> None:
        from opacus import PrivacyEngine

        self.config = config
        with warnings.catch_warnings():  # "secure RNG turned off": said in this module's docstring
            warnings.simplefilter("ignore")
            self.engine = PrivacyEngine(accountant=ACCOUNTANT)
            self.module, self.optimizer, sampled = self.engine.make_private_with_epsilon(
                module=model,
                optimizer=optimizer,
                data_loader=loader,
                target_epsilon=config.dp_epsilon,
                target_delta=config.dp_delta,
                epochs=config.epochs,
                max_grad_norm=config.dp_max_grad_norm,
                poisson_sampling=True,
            )
        self.steps_per_epoch = len(sampled)
        # the first layer's input (the image) needs no gradient, so torch warns about Opacus' hook there
        warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed")
        log(
            f"differential privacy: target ε {config.dp_epsilon:g} at δ {config.dp_delta:g} over "
            f"{config.epochs} epochs; Poisson sampling (rate {sampled.sample_rate:.4f}), per-sample "
            f"clipping at {config.dp_max_grad_norm:g}, noise multiplier {self.optimizer.noise_multiplier:.3f}. "
            "Weight EMA, global gradient clipping and class weights are off under DP."
        )

    def poisson(self, loader: torch.utils.data.DataLoader) -> torch.utils.data.DataLoader:
        """The epoch's seeded loader, resampled: each image joins each batch with probability q."""
        from opacus.data_loader import DPDataLoader

        return DPDataLoader.from_data_loader(loader)  # draws from the loader's own seeded generator

    def spent(self) -> dict[str, Any]:
        """The privacy spent so far, as the run records it."""
        epsilon = self.engine.get_epsilon(self.config.dp_delta) if len(self.engine.accountant) else 0.0
        return {
            "epsilon": float(epsilon),
            "delta": self.config.dp_delta,
            "max_grad_norm": self.config.dp_max_grad_norm,
            "accountant": ACCOUNTANT,
            "target_epsilon": self.config.dp_epsilon,
            "noise_multiplier": float(self.optimizer.noise_multiplier),
        }

    def state_dict(self) -> dict[str, Any]:
        return dict(self.engine.accountant.state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.engine.accountant.load_state_dict(state)


def status(private: PrivateTraining | None) -> dict[str, Any]:
    """Extra run.json fields: the privacy spent, when the run is private."""
    return {"privacy": private.spent()} if private is not None else {}


def summary(private: PrivateTraining | None) -> str:
    """A note for the end-of-training log line ("" without DP)."""
    if private is None:
        return ""
    spent = private.spent()
    return f"; privacy spent: ε {spent['epsilon']:.3f} at δ {spent['delta']:g} ({ACCOUNTANT} accountant)"
