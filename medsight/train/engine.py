"""The one training engine: a seeded loop with checkpoints that resume exactly.

What is learnt (classification, segmentation, ...) is a ``Task`` (``task.py``, ``tasks/``); the
engine runs any of them the same way.

Every epoch re-seeds torch, numpy and the augmentation from (seed, epoch), so an interrupted run
resumed from its last checkpoint continues bit-for-bit as if it had never stopped. The best
model (by the validation metric, on the EMA weights when EMA is on) is kept in the checkpoint.
"""

from __future__ import annotations

import copy
import gc
import math
import random
import time
from collections.abc import Callable
from pathlib import Path

import monai
import numpy as np
import torch
import yaml
from torch import nn
from torch.optim.swa_utils import AveragedModel

from medsight.errors import ConfigError
from medsight.train import distributed, privacy
from medsight.train.averaging import WeightAverager, recompute_batchnorm
from medsight.train.config import TrainConfig
from medsight.train.distributed import SINGLE, World
from medsight.train.inference import load_checkpoint
from medsight.train.inputs import to_device
from medsight.train.run_folder import (
    atomic_torch_save,
    atomic_write_text,
    refuse_existing_run,
    require_run,
    set_status,
    versions,
)
from medsight.train.task import Task, task_kind

Log = Callable[[str], None]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def ema_with_warmup(decay: float) -> Callable:
    """EMA whose decay grows from 0.1 towards ``decay``: early averages do not cling to the random init."""

    def average(averaged: torch.Tensor, current: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        d = min(decay, (1 + int(steps)) / (10 + int(steps)))
        return d * averaged + (1 - d) * current

    return average


def make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]  # norms and biases are not decayed
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=0.9, nesterov=True)
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=config.lr, momentum=0.9)
    return torch.optim.AdamW(groups, lr=config.lr)


def make_schedule(config: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int):
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.lr, total_steps=total_steps, pct_start=0.2
        )
    warmup = max(1, total_steps // 20)

    def factor(step: int) -> float:
        if config.schedule == "constant":
            return 1.0
        if config.schedule == "step":
            return 0.1 ** ((step >= total_steps // 2) + (step >= 3 * total_steps // 4))
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def choose_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"device '{name}' is not valid; use auto, cpu or cuda.") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for, but no GPU is available; use --device cpu or auto.")
    return device


def default_loader_workers(config: TrainConfig, device: torch.device, cores: int) -> int:
    """One process augments the next batch while training runs, when augmentation is on and a core is free."""
    if config.num_workers is not None:
        return config.num_workers
    # (two OpenMP threads beside any other busy process stall each other: 5-10x slower steps were
    # measured here, so the network keeps one thread and the augmentation gets the other core)
    return 1 if config.augment != "none" and device.type == "cpu" and cores >= 2 else 0


def collect_before_fork() -> None:
    """Free unreachable objects now, in this process, before loader workers are forked from it.

    A forked worker inherits the parent's heap, garbage included, and its own garbage collector may
    then free it: an ONNX Runtime session left in a reference cycle (by an evaluation or a benchmark
    run earlier in the same process) was destroyed inside a worker, where its thread pool does not
    exist, and the worker hung for good in ``pthread_cond_destroy``.
    """
    gc.collect()


class Trainer:
    """Holds one run's moving parts; ``fit`` runs it to the end or to the time budget.

    ``model`` is the plain network (what checkpoints hold); ``net`` is what training runs forward:
    the same object in one process, wrapped by DDP (``distributed.py``) or Opacus (``privacy.py``).
    """

    def __init__(
        self, config: TrainConfig, run_dir: Path, task: Task, log: Log, world: World = SINGLE
    ) -> None:
        self.config, self.run_dir, self.task, self.log, self.world = config, run_dir, task, log, world
        self.device = distributed.place(choose_device(config.device), world)
        cores = distributed.threads_per_process(world.local_world_size)
        self.loader_workers = default_loader_workers(config, self.device, cores)
        # the loader worker needs a core of its own: OpenMP threads sharing a core with it spin and
        # stall (a training step ran 6x slower here with 2 threads + 1 worker on 2 cores)
        torch.set_num_threads(config.num_threads or max(1, cores - self.loader_workers))
        monai.data.set_track_meta(False)  # plain tensors: faster, and nothing to strip before collation
        seed_everything(config.seed)
        self.model = privacy.make_compatible(task.build_model(), config).to(self.device)
        task.to(self.device)
        self.ema = None
        if config.ema_decay:
            self.ema = AveragedModel(self.model, avg_fn=ema_with_warmup(config.ema_decay), use_buffers=True)
        self.net = distributed.wrap(self.model, world, self.device)
        self.private: privacy.PrivateTraining | None = None
        self.steps_per_epoch = distributed.steps_per_epoch(len(task.train_set()), config.batch_size, world)
        self.optimizer = make_optimizer(config, self.model)
        self.schedule = make_schedule(config, self.optimizer, config.epochs * self.steps_per_epoch)
        self.epoch, self.history, self.bad_epochs = 0, [], 0
        self.best = {"epoch": 0, "score": None}
        self.best_state: dict | None = None
        self.elapsed = 0.0
        # weight averaging (averaging.py): epochs after this many are averaged into the result
        self.averager = WeightAverager() if config.swa_start else None
        self.average_after = math.floor((config.swa_start or 0) * config.epochs)

    # -- one epoch ----------------------------------------------------------------------------
    def loader(self, epoch: int) -> torch.utils.data.DataLoader:
        epoch_seed = self.config.seed * 100_003 + epoch
        rank_seed = epoch_seed + self.world.rank  # DDP ranks draw their own augmentations and dropout
        seed_everything(rank_seed)
        self.task.reseed(rank_seed)
        workers = self.loader_workers
        if workers:
            collect_before_fork()
        images = self.task.train_set()
        generator = torch.Generator().manual_seed(rank_seed)
        if self.world.distributed:
            return distributed.sharded_loader(
                images, self.config.batch_size, self.world, self.config.seed, epoch, workers, generator
            )
        loader = monai.data.DataLoader(
            images,
            batch_size=self.config.batch_size,
            shuffle=True,
            drop_last=False,
            num_workers=workers,
            generator=generator,
        )
        return self.private.poisson(loader) if self.private else loader

    def train_epoch(self, epoch: int, on_step: Callable[[float], None]) -> float:
        self.model.train()
        total, count = 0.0, 0
        for images, labels in self.loader(epoch):
            # a batch is a tensor, or a dict of them for fusion models (image + tabular): inputs.py
            images, labels = to_device(images, self.device), labels.to(self.device)
            loss = self.task.loss(self.net(images), labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.config.grad_clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            self.optimizer.step()
            self.schedule.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            if len(labels):  # a Poisson-sampled (DP) batch can be empty; its mean loss is NaN
                total += loss.item() * len(labels)
                count += len(labels)
            on_step(total / max(1, count))
        return distributed.average(total, count, self.world)

    @property
    def history_key(self) -> str:
        """The validation score's column in the history: ``val_auc``, ``val_dice``, ..."""
        return f"val_{self.task.score_name.lower()}"

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def improved(self, val_loss: float, val_score: float) -> bool:
        score = val_score if self.config.monitor == "auc" else -val_loss
        if math.isnan(score):
            score = -val_loss
        if self.best["score"] is None or score > self.best["score"]:
            self.best = {"epoch": self.epoch, "score": score}
            self.best_state = copy.deepcopy(self.eval_model.state_dict())
            return True
        return False

    # -- checkpoints --------------------------------------------------------------------------
    def inference_info(self) -> dict:
        return {
            "model": self.config.model,
            "model_options": self.config.model_options,
            **self.task.inference_info(),
            **privacy.inference_extra(self.config),
        }

    def save(self) -> None:
        checkpoint = {
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "best": self.best,
            "best_state": self.best_state,
            "history": self.history,
            "bad_epochs": self.bad_epochs,
            "elapsed": self.elapsed,
            "averager": self.averager.state_dict() if self.averager else None,
            "inference": self.inference_info(),
        }
        if self.private is not None:
            checkpoint["privacy"] = self.private.state_dict()  # the accountant's history, for resume
        checkpoint.update(distributed.checkpoint_extra(self.world))
        atomic_torch_save(checkpoint, self.run_dir / "checkpoint.pt")

    def restore(self, checkpoint: dict) -> None:
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.schedule.load_state_dict(checkpoint["schedule"])
        if self.ema is not None:
            self.ema.load_state_dict(checkpoint["ema"])
        if self.private is not None:
            self.private.load_state_dict(checkpoint["privacy"])
        self.epoch, self.best, self.best_state = (
            checkpoint["epoch"],
            checkpoint["best"],
            checkpoint["best_state"],
        )
        self.history, self.bad_epochs = checkpoint["history"], checkpoint["bad_epochs"]
        self.elapsed = checkpoint["elapsed"]
        if self.averager is not None and checkpoint.get("averager"):
            self.averager.load_state_dict(checkpoint["averager"])

    def make_private(self) -> None:
        """Hand the model and optimiser to Opacus, once the run's epochs are final (they set the noise)."""
        self.private = privacy.PrivateTraining(
            self.config, self.model, self.optimizer, self.loader(0), self.log
        )
        self.net, self.optimizer = self.private.module, self.private.optimizer
        self.steps_per_epoch = self.private.steps_per_epoch
        self.schedule = make_schedule(self.config, self.optimizer, self.config.epochs * self.steps_per_epoch)

    # -- the loop -----------------------------------------------------------------------------
    def fit(self) -> str:
        """Train to the last epoch, early stop or time budget; returns why it stopped."""
        config = self.config
        reason = None
        with distributed.progress(self.world) as progress:
            task = progress.add_task(
                "training",
                total=config.epochs * self.steps_per_epoch,
                completed=self.epoch * self.steps_per_epoch,
                status="",
            )
            while self.epoch < config.epochs and reason is None:
                started = time.perf_counter()
                best_note = self._best_note()

                def on_step(loss: float, note: str = best_note) -> None:
                    progress.update(
                        task,
                        advance=1,
                        status=f"epoch {self.epoch + 1}/{config.epochs} loss {loss:.3f}{note}",
                    )

                train_loss = self.train_epoch(self.epoch, on_step)
                self.epoch += 1
                if self.world.is_main:  # rank 0 judges the epoch; every rank stops when it says so
                    reason = self.end_epoch(
                        train_loss, started, lambda status: progress.update(task, status=status)
                    )
                reason = distributed.broadcast(reason, self.world)
        if self.world.is_main:
            self.finish_averaging()
        return reason or "all epochs done"

    def finish_averaging(self) -> None:
        """With weight averaging on, the averaged model (BatchNorm re-estimated) is the result."""
        if self.averager is None or self.averager.count == 0:
            return
        model = copy.deepcopy(self.eval_model)
        model.load_state_dict(self.averager.averaged_state(model.state_dict()))
        recompute_batchnorm(model, self.task.batchnorm_inputs().to(self.device))
        score = self.task.validate(model, self.device)[1]
        first = self.epoch - self.averager.count + 1
        self.best_state = copy.deepcopy(model.state_dict())
        self.best = {"epoch": f"{first}-{self.epoch} averaged", "score": score}
        self.log(
            f"averaged the weights of epochs {first}-{self.epoch}: validation {self.task.score_name} {score:.3f}"
        )
        self.save()

    def end_epoch(self, train_loss: float, started: float, show: Callable[[str], None]) -> str | None:
        """Validate, record, checkpoint; returns why training should stop now, or None."""
        config = self.config
        val_loss, val_score = self.task.validate(self.eval_model, self.device)
        seconds = time.perf_counter() - started
        self.elapsed += seconds
        self.history.append(
            {
                "epoch": self.epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                self.history_key: None if math.isnan(val_score) else val_score,
                "lr": self.optimizer.param_groups[0]["lr"],
                "seconds": seconds,
            }
        )
        if self.averager is not None and self.epoch > self.average_after:
            self.averager.update(self.eval_model.state_dict())
        self.bad_epochs = 0 if self.improved(val_loss, val_score) else self.bad_epochs + 1
        self.save()
        show(
            f"epoch {self.epoch}/{config.epochs} loss {train_loss:.3f} "
            f"val {self.task.score_name} {val_score:.3f}{self._best_note()}"
        )
        budget = config.time_budget_min * 60 if config.time_budget_min else math.inf
        if self.bad_epochs >= (config.early_stopping_patience or math.inf):
            return f"early stop: no better validation {config.monitor} for {self.bad_epochs} epochs"
        if self.elapsed + seconds > budget and self.epoch < config.epochs:
            return f"time budget of {config.time_budget_min:g} min reached"
        return None

    def _best_note(self) -> str:
        if self.best["score"] is None:
            return ""
        return f" (best {self.best['score']:.3f} @ {self.best['epoch']})"

    def probe_epoch_seconds(self, steps: int = 4) -> float:
        """Time a few training steps and one validation on a throw-away copy, to size the schedule
        to a time budget."""
        model = copy.deepcopy(self.model)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        loader = iter(self.loader(-1))
        started, done = time.perf_counter(), 0
        for images, labels in loader:
            loss = self.task.loss(model(to_device(images, self.device)), labels.to(self.device))
            optimizer.zero_grad()
            loss.backward()
            done += 1
            if done == steps:
                break
        per_step = (time.perf_counter() - started) / max(1, done)
        started = time.perf_counter()
        if self.world.is_main:  # rank 0 alone validates
            self.task.validate(model.eval(), self.device)
        return per_step * self.steps_per_epoch + (time.perf_counter() - started)


def fit(config: TrainConfig, run_dir: Path, *, resume: bool = False, log: Log = print) -> Path:
    """Train a model into ``run_dir`` (the run folder); returns it. Evaluation is a separate step.

    Under torchrun every process calls this; rank 0 alone logs and writes (see ``distributed.py``).
    """
    world = distributed.start()
    try:
        result = _fit(config, Path(run_dir), resume, log if world.is_main else _quiet, world)
    except BaseException:
        distributed.stop(world, ranks_in_step=False)  # the other ranks may never reach a barrier
        raise
    distributed.stop(world)
    return result


def _quiet(message: str) -> None:
    pass


def _read_run(run_dir: Path, log: Log) -> tuple[TrainConfig, dict]:
    require_run(run_dir, "config.yaml", "checkpoint.pt")
    recorded = yaml.safe_load((run_dir / "config.yaml").read_text())
    config = TrainConfig(**recorded["config"])
    checkpoint = load_checkpoint(run_dir / "checkpoint.pt")
    log(f"resuming {run_dir} after epoch {checkpoint['epoch']} of {config.epochs}")
    return config, checkpoint


def _write_config(run_dir: Path, config: TrainConfig, fingerprint: dict) -> None:
    record = {"config": config.model_dump(mode="json"), "fingerprint": fingerprint, "versions": versions()}
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(record, sort_keys=False))


def _fit(config: TrainConfig, run_dir: Path, resume: bool, log: Log, world: World) -> Path:
    checkpoint = None
    if resume:  # rank 0 reads the run folder (other machines need not see it) and shares it
        config, checkpoint = distributed.on_main(lambda: _read_run(run_dir, log), world)
        distributed.check_same_world(checkpoint, world)
    else:
        distributed.on_main(lambda: refuse_existing_run(run_dir), world)
    kind = task_kind(config)
    dataset = kind.load(config)  # before anything is written: a missing data set leaves no trace
    budget_sets_epochs = not resume and config.epochs is None and config.time_budget_min is not None
    resolved, fingerprint = kind.resolve(config, dataset)
    if not resume:
        config = resolved
    config = privacy.resolve(
        config, kind.n_train(dataset), world.world_size
    )  # refused DP settings write nothing
    status = distributed.main_only(set_status, world)
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    status(run_dir, "running", dataset=config.dataset, **distributed.status(world))
    try:
        task = kind.build(config, dataset)
        trainer = Trainer(config, run_dir, task, log, world)
        if budget_sets_epochs:
            fitted = int(config.time_budget_min * 60 * 0.9 // max(trainer.probe_epoch_seconds(), 1e-3))
            epochs = distributed.broadcast(max(1, min(config.epochs, fitted)), world)
            config = trainer.config = config.model_copy(update={"epochs": epochs})
            trainer.schedule = make_schedule(config, trainer.optimizer, epochs * trainer.steps_per_epoch)
        if config.dp_epsilon is not None:
            trainer.make_private()
        if checkpoint is not None:
            trainer.restore(checkpoint)
        elif world.is_main:
            _write_config(run_dir, config, fingerprint)
        log(
            f"training {config.model} on {config.dataset}: {task.describe()}, "
            f"{config.epochs} epochs, batch {config.batch_size}, device {trainer.device}"
            + distributed.describe(world, config.batch_size)
        )
        reason = trainer.fit()
        status(
            run_dir,
            "trained",
            stopped=reason,
            best_epoch=trainer.best["epoch"],
            epochs_trained=trainer.epoch,
            train_seconds=round(trainer.elapsed, 1),
            **privacy.status(trainer.private),
        )
        log(f"stopped: {reason}; best epoch {trainer.best['epoch']}{privacy.summary(trainer.private)}")
    except KeyboardInterrupt:
        status(run_dir, "interrupted", error="interrupted; continue with --resume")
        raise
    except Exception as err:
        status(run_dir, "failed", error=f"{type(err).__name__}: {err}")
        raise
    return run_dir
