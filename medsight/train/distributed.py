"""Data-parallel training over several processes and machines (PyTorch DDP).

``medsight train --nproc N`` starts N local workers through torchrun (``launch``); a cluster starts
them with torchrun itself (README, "Distributed training"). Every worker runs the same engine and
learns its place from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
MASTER_ADDR/MASTER_PORT). The global batch stays what the config says: each process takes
``batch // world_size`` of it from its DistributedSampler shard and DDP averages the gradients, so
a run's schedule and results are comparable with a one-process run. Rank 0 alone validates, logs
and writes the run folder; its decisions (early stop, time budget) are broadcast so every rank
stops together. In a single process (``SINGLE``) every function here is a no-op, so the
single-process engine runs exactly as it would without this module.
"""

from __future__ import annotations

import gc
import math
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import monai
import torch
import torch.distributed as dist
import yaml
from rich.progress import Progress
from torch import nn
from torch.utils.data import Dataset, DistributedSampler

from medsight.data.registry import load_dataset
from medsight.errors import ConfigError, MedsightError
from medsight.progress import new_progress
from medsight.train import privacy
from medsight.train.config import TrainConfig
from medsight.train.run_folder import refuse_existing_run, require_run

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = World()


def world_from_env() -> World:
    """The world torchrun describes in the environment; ``SINGLE`` outside torchrun."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return SINGLE
    return World(
        rank=int(os.environ["RANK"]),
        world_size=size,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(size))),
    )


def is_main_process() -> bool:
    return world_from_env().is_main


def under_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


# -- launching ----------------------------------------------------------------------------------
def check_nproc(nproc: int) -> None:
    cores = os.cpu_count() or 1
    if nproc < 1:
        raise ConfigError(f"--nproc {nproc} is not valid: use 1 (no DDP) or more processes.")
    if nproc > cores:
        raise ConfigError(
            f"--nproc {nproc} is more than this machine's {cores} CPU cores: each process needs a core "
            f"of its own, so use at most {cores}. To use more machines, launch torchrun on each "
            "(README, 'Distributed training')."
        )


def preflight(config: TrainConfig, run_dir: Path, nproc: int, resume: bool) -> None:
    """Refuse, before any worker starts, what the workers would refuse: nothing is half-written."""
    check_nproc(nproc)
    if resume:
        recorded = yaml.safe_load((require_run(run_dir, "config.yaml") / "config.yaml").read_text())
        config = TrainConfig(**recorded["config"])
    else:
        refuse_existing_run(run_dir)
        load_dataset(config.dataset)
    privacy.check_world(config, nproc)


def threads_per_process(local_world_size: int) -> int:
    return max(1, (os.cpu_count() or 1) // local_world_size)


def launch(nproc: int, args: list[str]) -> int:
    """Run ``python -m medsight.train ARGS`` in ``nproc`` local processes under torchrun; its exit code."""
    # torchrun would otherwise set 1 thread per process and warn about it; we choose (cores // N)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads_per_process(nproc))}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # a rendezvous on a free local port: parallel runs do not collide
        f"--nproc_per_node={nproc}",
        "-m",
        "medsight.train",
        *args,
    ]
    return subprocess.run(command, env=env, check=False).returncode


# -- the process group --------------------------------------------------------------------------
def start() -> World:
    """Join the process group torchrun set up (gloo for CPU tensors, NCCL for GPU ones)."""
    world = world_from_env()
    if world.distributed and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(world.local_rank)
            # objects and CPU tensors go over gloo even on GPU machines; CUDA tensors over NCCL
            dist.init_process_group(backend="cpu:gloo,cuda:nccl")
        else:
            dist.init_process_group(backend="gloo")
    return world


def stop(world: World, ranks_in_step: bool = True) -> None:
    """Leave the process group once every rank is done with it.

    DDP's reducer holds the group and in-flight gloo work; if that is freed only at interpreter
    exit, gloo's threads die under a finalising interpreter and the process aborts ("terminate
    called without an active exception", seen in CI). So collect the wrappers first, then meet
    at a barrier, then destroy.
    """
    if world.distributed and dist.is_initialized():
        gc.collect()
        if ranks_in_step:
            dist.barrier()
        dist.destroy_process_group()


def place(device: torch.device, world: World) -> torch.device:
    """One GPU per local process; CPU processes share the CPU."""
    if world.distributed and device.type == "cuda" and device.index is None:
        return torch.device("cuda", world.local_rank)
    return device


def wrap(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """The module to run forward through: DDP around ``model`` (which stays unwrapped for saving)."""
    if not world.distributed:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


# -- data ---------------------------------------------------------------------------------------
def per_process_batch(batch_size: int, world: World) -> int:
    return max(1, batch_size // world.world_size)


def steps_per_epoch(n_train: int, batch_size: int, world: World) -> int:
    if not world.distributed:
        return math.ceil(n_train / batch_size)
    shard = math.ceil(n_train / world.world_size)  # DistributedSampler pads shards to equal size
    return math.ceil(shard / per_process_batch(batch_size, world))


def sharded_loader(
    data: Dataset,
    batch_size: int,
    world: World,
    seed: int,
    epoch: int,
    workers: int,
    generator: torch.Generator,
) -> torch.utils.data.DataLoader:
    """This rank's shard of one seeded global shuffle (the same permutation on every rank)."""
    sampler = DistributedSampler(
        data, num_replicas=world.world_size, rank=world.rank, shuffle=True, seed=seed, drop_last=False
    )
    sampler.set_epoch(epoch)
    return monai.data.DataLoader(
        data,
        batch_size=per_process_batch(batch_size, world),
        sampler=sampler,
        num_workers=workers,
        generator=generator,
    )


# -- agreeing ---------------------------------------------------------------------------------
def broadcast(value: T, world: World) -> T:
    """Rank 0's ``value`` on every rank (picklable values)."""
    if not world.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(fn: Callable[[], T], world: World) -> T:
    """Run ``fn`` on rank 0 only and hand its result, or the user error it raised, to every rank."""
    if not world.distributed:
        return fn()
    outcome: tuple[str, Any] = ("ok", None)
    if world.is_main:
        try:
            outcome = ("ok", fn())
        except MedsightError as err:
            outcome = ("error", err)
    kind, value = broadcast(outcome, world)
    if kind == "error":
        raise value
    return value


def main_only(fn: Callable[..., Any], world: World) -> Callable[..., Any]:
    """``fn`` on rank 0; a no-op elsewhere (logs, status files)."""
    return fn if world.is_main else (lambda *args, **kwargs: None)


def average(total: float, count: int, world: World) -> float:
    """The mean of per-sample values summed over every rank."""
    if not world.distributed:
        return total / max(1, count)
    sums = torch.tensor([total, float(count)], dtype=torch.float64)
    dist.all_reduce(sums)
    return float(sums[0] / sums[1].clamp_min(1))


def check_same_world(checkpoint: dict, world: World) -> None:
    """The schedule's length depends on the number of processes: resume with the one that trained."""
    trained_with = checkpoint.get("world_size", 1)
    if trained_with != world.world_size:
        raise ConfigError(
            f"this run was trained with {trained_with} process(es), not {world.world_size}: "
            f"resume it with --nproc {trained_with} (or the same torchrun world)."
        )


def status(world: World) -> dict[str, int]:
    """Extra run.json fields (none in one process, so a one-process run.json is unchanged)."""
    return {"processes": world.world_size} if world.distributed else {}


def checkpoint_extra(world: World) -> dict[str, int]:
    return {"world_size": world.world_size} if world.distributed else {}


def progress(world: World) -> Progress:
    return new_progress(transient=False) if world.is_main else Progress(disable=True)


def describe(world: World, batch_size: int) -> str:
    """A note for the start-of-training log line ("" in one process)."""
    if not world.distributed:
        return ""
    per = per_process_batch(batch_size, world)
    return (
        f"; DDP over {world.world_size} processes, {per} images each per step "
        f"(global batch {per * world.world_size}), {torch.get_num_threads()} CPU thread(s) each"
    )
