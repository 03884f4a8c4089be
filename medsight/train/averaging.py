"""Weight averaging over the last epochs (SWA, Izmailov et al., UAI 2018).

On small data sets the validation metric of a single checkpoint swings from epoch to epoch (and
with 100 validation cases, picking the best epoch mostly picks noise). Averaging the weights of
every epoch from a fixed point on gives one flatter, steadier model; BatchNorm statistics are
then recomputed for the averaged weights on the (un-augmented) training images.
"""

from __future__ import annotations

import torch
from torch import nn


class WeightAverager:
    """Running mean of floating-point parameters and buffers, one update per epoch."""

    def __init__(self) -> None:
        self.mean: dict[str, torch.Tensor] | None = None
        self.count = 0

    def update(self, state: dict[str, torch.Tensor]) -> None:
        self.count += 1
        if self.mean is None:
            self.mean = {
                k: v.detach().clone().float() if v.is_floating_point() else v.clone()
                for k, v in state.items()
            }
            return
        for key, value in state.items():
            if value.is_floating_point():
                self.mean[key] += (value.detach().float() - self.mean[key]) / self.count
            else:
                self.mean[key] = value.clone()

    def averaged_state(self, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        assert self.mean is not None, "no epoch was averaged"
        return {k: v.to(like[k].dtype) for k, v in self.mean.items()}

    def state_dict(self) -> dict:
        return {"mean": self.mean, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.count = state["mean"], state["count"]


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, inputs: torch.Tensor, batch_size: int = 256) -> None:
    """Re-estimate BatchNorm running statistics as an exact average over ``inputs``."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = {m: m.momentum for m in norms}
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over all batches
    model.train()
    for start in range(0, len(inputs), batch_size):
        model(inputs[start : start + batch_size])
    for norm, momentum in momenta.items():
        norm.momentum = momentum
    model.eval()
