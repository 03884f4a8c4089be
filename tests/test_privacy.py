"""Differentially private training (Opacus): a short real run, the architecture fixes, the refusals."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from torch import nn

from medsight.data.prepare import InputSpec
from medsight.errors import ConfigError
from medsight.models import build_model
from medsight.train import privacy
from medsight.train.config import TrainConfig
from medsight.train.engine import fit
from medsight.train.inference import load_trained_model
from medsight.workflows import train_and_evaluate

FAST = {"image_size": 32, "bootstrap": 200, "model_options": {"widths": [8, 16, 32]}}
EPSILON = 3.0


def _batchnorms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def test_short_private_run(tmp_path):
    run = tmp_path / "run"
    train_and_evaluate(
        TrainConfig(dataset="synthetic", epochs=1, dp_epsilon=EPSILON, **FAST), run, log=lambda _: None
    )
    metrics = json.loads((run / "metrics.json").read_text())
    spent = metrics["privacy"]
    assert set(spent) == {"epsilon", "delta", "max_grad_norm", "accountant"}
    assert 0 < spent["epsilon"] <= EPSILON + 0.05  # the PRV accountant's own error bound is 0.01
    assert spent["delta"] == 1e-5 and spent["max_grad_norm"] == 1.0
    assert json.loads((run / "run.json").read_text())["privacy"]["epsilon"] == spent["epsilon"]
    assert f"ε = {spent['epsilon']:.3f}" in (run / "report.html").read_text()

    recorded = yaml.safe_load((run / "config.yaml").read_text())["config"]
    assert recorded["model_options"]["norm"] == "group" and recorded["dp_delta"] == 1e-5
    assert (
        recorded["ema_decay"] == 0 and recorded["grad_clip"] is None and recorded["class_weights"] == "none"
    )

    model = load_trained_model(run).model
    assert not _batchnorms(model) and any(isinstance(m, nn.GroupNorm) for m in model.modules())
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=False)
    assert checkpoint["privacy"]["history"], "the accountant's state is kept for --resume"


def test_other_models_are_fixed_and_reloaded_the_same(tmp_path):
    config = TrainConfig(dataset="synthetic", model="resnet10", dp_epsilon=EPSILON)
    model = privacy.make_compatible(build_model("resnet10", 2, 1, 2), config)
    assert not _batchnorms(model)
    spec = InputSpec(spatial_dims=2, channels=1, image_size=32, intensity="scale", mean=[0.0], std=[1.0])
    inference = {"model": "resnet10", "model_options": {}, "classes": ["a", "b"], "input": spec.model_dump()}
    run = tmp_path / "run"
    run.mkdir()
    torch.save(
        {"inference": {**inference, **privacy.inference_extra(config)}, "best_state": model.state_dict()},
        run / "checkpoint.pt",
    )
    reloaded = load_trained_model(run).model  # strict load: the same layers as trained
    assert not _batchnorms(reloaded)
    assert reloaded.state_dict().keys() == model.state_dict().keys()


def test_bad_epsilon_is_one_line_from_the_cli(tmp_path, run_cli):
    run = tmp_path / "run"
    result = run_cli("train", "--dataset", "synthetic", "--dp-epsilon", "0", "--out", run)
    assert result.returncode != 0
    assert result.stderr.strip() == "error: config key 'dp_epsilon': Input should be greater than 0."
    assert not run.exists()


def test_delta_not_below_one_over_n_is_refused(tmp_path):
    run = tmp_path / "run"
    config = TrainConfig(dataset="synthetic", dp_epsilon=EPSILON, dp_delta=1e-3, **FAST)
    with pytest.raises(ConfigError, match=r"not below 1/n_train = 1/1200"):
        fit(config, run, log=lambda _: None)
    assert not run.exists()


def test_batchnorm_is_refused_under_privacy(tmp_path):
    run = tmp_path / "run"
    config = TrainConfig(dataset="synthetic", dp_epsilon=EPSILON, model_options={"norm": "batch"})
    with pytest.raises(ConfigError, match="norm must be 'group'"):
        fit(config, run, log=lambda _: None)
    assert not run.exists()


@pytest.mark.parametrize("n_train", [50, 1200, 4708, 100_000])
def test_default_delta_is_well_below_one_over_n(n_train):
    delta = privacy.default_delta(n_train)
    assert delta <= 1 / (10 * n_train) < 1 / n_train
    assert delta > 1 / (100 * n_train)  # the largest power of ten that fits, not needlessly small
