"""Distributed training (PyTorch DDP): a real two-process run on the CPU, and the refusals."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from medsight.errors import ConfigError
from medsight.train import distributed
from medsight.train.config import TrainConfig
from medsight.train.distributed import World
from medsight.train.inference import load_trained_model

FAST = {"image_size": 32, "bootstrap": 200, "model_options": {"widths": [8, 16, 32]}}
EPOCHS = 3
# Seeds 0-3 gave |test AUC(2 processes) - test AUC(1 process)| of 0.000-0.010 here (0.03: 3x margin); they differ in
# shuffling, per-process BatchNorm statistics and a global batch of 74 instead of 75, not in quality.
AUC_TOLERANCE = 0.03


def _files(run: Path) -> list[str]:
    return sorted(str(path.relative_to(run)) for path in run.rglob("*") if path.is_file())


def test_two_processes_match_one_process(tmp_path, run_cli):
    fast = tmp_path / "fast.yaml"
    fast.write_text(yaml.safe_dump(FAST))
    one, two = tmp_path / "one", tmp_path / "two"
    common = ("train", "--dataset", "synthetic", "--epochs", EPOCHS, "--config", fast)
    single = run_cli(*common, "--out", one, timeout=600)
    assert single.returncode == 0, single.stderr
    result = run_cli(*common, "--out", two, "--nproc", "2", timeout=600)
    assert result.returncode == 0, result.stderr
    assert "DDP over 2 processes" in result.stdout
    assert result.stdout.count("stopped:") == 1, "rank 0 alone logs"

    assert _files(two) == _files(one)
    status = json.loads((two / "run.json").read_text())
    assert status["status"] == "complete" and status["processes"] == 2
    recorded = [yaml.safe_load((run / "config.yaml").read_text())["config"] for run in (one, two)]
    assert recorded[0] == recorded[1], "the same resolved config, whatever the number of processes"

    checkpoint = torch.load(two / "checkpoint.pt", weights_only=False)
    assert not any(key.startswith("module.") for key in checkpoint["model"])
    assert checkpoint["epoch"] == EPOCHS and load_trained_model(two).model is not None

    metrics_two = json.loads((two / "metrics.json").read_text())
    metrics_one = json.loads((one / "metrics.json").read_text())
    aucs = metrics_one["test"]["auc"], metrics_two["test"]["auc"]
    assert abs(aucs[1] - aucs[0]) <= AUC_TOLERANCE, (
        f"test AUC 1 process {aucs[0]:.3f}, 2 processes {aucs[1]:.3f}"
    )
    assert metrics_two["test"]["auc"] > 0.8


def test_more_processes_than_cores_is_refused(tmp_path, run_cli):
    run = tmp_path / "run"
    too_many = (os.cpu_count() or 1) + 1
    result = run_cli("train", "--dataset", "synthetic", "--out", run, "--nproc", too_many)
    assert result.returncode != 0
    assert f"--nproc {too_many} is more than this machine's" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not run.exists()


def test_zero_processes_is_refused():
    with pytest.raises(ConfigError, match="--nproc 0 is not valid"):
        distributed.check_nproc(0)


def test_privacy_with_several_processes_is_refused(tmp_path):
    config = TrainConfig(dataset="synthetic", dp_epsilon=3.0)
    with pytest.raises(ConfigError, match="not supported yet"):
        distributed.preflight(config, tmp_path / "run", 2, resume=False)
    assert not (tmp_path / "run").exists()


def test_world_from_torchrun_environment(monkeypatch):
    assert distributed.world_from_env() == distributed.SINGLE
    for key, value in {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(key, value)
    world = distributed.world_from_env()
    assert world == World(rank=3, world_size=4, local_rank=1, local_world_size=2) and not world.is_main
    # the global batch stays the config's: 4 processes x 32 images, each over a quarter of the data
    assert distributed.per_process_batch(128, world) == 32
    assert (
        distributed.steps_per_epoch(1000, 128, world) == 8 == distributed.steps_per_epoch(1000, 128, World())
    )


def test_resume_needs_the_same_number_of_processes():
    distributed.check_same_world({"epoch": 1}, World())
    with pytest.raises(ConfigError, match="--nproc 2"):
        distributed.check_same_world({"world_size": 2}, World())
