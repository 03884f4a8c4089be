"""Make a model smaller: magnitude or channel pruning with a short fine-tune, low-rank Linear layers.

Pruning keeps the architecture (pruned weights become exact zeros, made permanent with
``prune.remove``), so a pruned variant is a plain state dict for the run's own model. Low-rank
factorisation replaces a Linear layer W (out x in) by two, W ~ (U sqrt(S)) (sqrt(S) V^T), of rank R;
the variant records which layers, so it can be rebuilt before its weights are loaded.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import prune

from medsight.train.inference import load_trained_model

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
PRUNE_METHODS = ("unstructured", "structured")


def prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, (*CONV_TYPES, nn.Linear))]


def prune_model(model: nn.Module, amount: float, method: str) -> None:
    """Attach pruning masks: global L1 over all conv/Linear weights, or L2 channel pruning per conv."""
    if method == "unstructured":
        prune.global_unstructured(prunable(model), pruning_method=prune.L1Unstructured, amount=amount)
    else:
        for module in model.modules():
            if isinstance(
                module, CONV_TYPES
            ):  # output channels (dim 0); the classifier head keeps its classes
                prune.ln_structured(module, "weight", amount=amount, n=2, dim=0)


def make_permanent(model: nn.Module) -> None:
    for module, name in prunable(model):
        if prune.is_pruned(module) and hasattr(module, f"{name}_mask"):
            prune.remove(module, name)


def sparsity(model: nn.Module) -> dict[str, float]:
    """Share of zero weights over conv/Linear layers, and share of conv output channels all zero."""
    weights = [m.weight.detach() for m, _ in prunable(model)]
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    convs = [m.weight.detach() for m in model.modules() if isinstance(m, CONV_TYPES)]
    channels = sum(w.shape[0] for w in convs)
    dead = sum(int((w.flatten(1) == 0).all(dim=1).sum()) for w in convs)
    return {
        "zero_weight_fraction": zeros / max(1, total),
        "zero_channel_fraction": dead / max(1, channels),
        "prunable_weights": int(total),
    }


def _freeze_norm_statistics(model: nn.Module) -> None:
    # a few hundred small batches would only add noise to the running statistics: keep the trained ones
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def finetune(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    steps: int = 300,
    lr: float = 2e-4,
    batch_size: int = 64,
    seed: int = 0,
    class_weights: torch.Tensor | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> float:
    """A short AdamW fine-tune at a low learning rate (pruning masks stay applied); returns the last loss.

    ``class_weights`` should be the run's own, so the fine-tune does not shift the class balance the
    run's validation threshold was chosen for.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    loss_fn = nn.CrossEntropyLoss(weight=class_weights)
    model.train()
    _freeze_norm_statistics(model)
    loss = torch.tensor(math.nan)
    for step in range(steps):
        pick = torch.randint(len(labels), (min(batch_size, len(labels)),), generator=generator)
        loss = loss_fn(model(inputs[pick]), labels[pick])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if on_step is not None:
            on_step(step, loss.item())
    model.eval()
    return loss.item()


# --------------------------------------------------------------------------- low rank


def linear_parameters(model: nn.Module) -> int:
    return sum(p.numel() for m in model.modules() if isinstance(m, nn.Linear) for p in m.parameters())


def _factor_pair(linear: nn.Linear, rank: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(linear.in_features, rank, bias=False),
        nn.Linear(rank, linear.out_features, bias=linear.bias is not None),
    )


def worth_factorising(linear: nn.Linear, rank: int) -> bool:
    """Only when rank R stores fewer numbers than the full matrix: R (in + out) < in * out."""
    return rank < min(linear.in_features, linear.out_features) and rank * (
        linear.in_features + linear.out_features
    ) < (linear.in_features * linear.out_features)


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


@torch.no_grad()
def factorise_linear(model: nn.Module, rank: int) -> dict[str, int]:
    """Replace every Linear layer worth it by its rank-``rank`` SVD; returns {layer name: rank}."""
    targets = [
        (n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and worth_factorising(m, rank)
    ]
    for name, linear in targets:
        u, s, vh = torch.linalg.svd(linear.weight.detach().double(), full_matrices=False)
        root = s[:rank].sqrt()
        pair = _factor_pair(linear, rank)
        pair[0].weight.copy_((root[:, None] * vh[:rank]).float())
        pair[1].weight.copy_((u[:, :rank] * root[None, :]).float())
        if linear.bias is not None:
            pair[1].bias.copy_(linear.bias)
        _set_module(model, name, pair)
    return {name: rank for name, _ in targets}


def rebuild_factorised(model: nn.Module, layers: dict[str, int]) -> None:
    """Give ``model`` the shapes of a factorised variant, so its state dict can be loaded."""
    for name, rank in layers.items():
        _set_module(model, name, _factor_pair(model.get_submodule(name), rank))


def load_torch_variant(run_dir: Path, folder: Path) -> nn.Module:
    """A pruned or factorised variant: the run's architecture (plus recorded factors) and the saved weights."""
    record = json.loads((Path(folder) / "variant.json").read_text())
    model = load_trained_model(run_dir).model
    rebuild_factorised(model, record.get("details", {}).get("factorised", {}))
    model.load_state_dict(torch.load(Path(folder) / record["file"], map_location="cpu", weights_only=True))
    return model.eval()
