"""How a served prediction is computed: the one-pass path (probabilities and Grad-CAM from one forward and
backward pass) gives the step-by-step answer, and an ensemble folder registers and serves through
``POST /api/predict`` and ``medsight predict`` with the mean of its members' probabilities."""

from __future__ import annotations

import csv
import io
import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from fastapi.testclient import TestClient
from PIL import Image
from predict_helpers import PASSWORD, bearer, synthetic_test_png

from medsight.data.registry import load_dataset
from medsight.errors import BadInputError
from medsight.explain import explain
from medsight.explain.served import predict_and_gradcam, weighted_maps
from medsight.models.cnn import CompactResNet
from medsight.models.registry import MODELS, build_model, has_class_map_head
from medsight.optimize import predictors
from medsight.optimize.ensemble import ENSEMBLE_FILE, load_ensemble, make_ensemble
from medsight.optimize.export import export_run
from medsight.predict.infer import infer
from medsight.predict.loaded import ENSEMBLE_FILE as SERVED_ENSEMBLE_FILE
from medsight.predict.loaded import load_model
from medsight.predict.registration import build_card, register_run
from medsight.serve import create_app
from medsight.store import Role, Store, add_user, create_token
from medsight.train.inference import load_trained_model


def _softer_copy(run_dir: Path, dest: Path) -> Path:
    """The run with its classifier's weights halved: a second member whose probabilities differ."""
    shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns("exports", "variants", "plots"))
    checkpoint = torch.load(dest / "checkpoint.pt", map_location="cpu", weights_only=False)
    head = [k for k in checkpoint["best_state"] if k.endswith("weight")][-1]
    checkpoint["best_state"][head] = checkpoint["best_state"][head] * 0.5
    torch.save(checkpoint, dest / "checkpoint.pt")
    return dest


@pytest.fixture(scope="module")
def ensemble_dir(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("served-ensemble")
    member = _softer_copy(run_dir, root / "member-b")
    out = root / "ensemble"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDSIGHT_HOME", str(root / "home"))
        make_ensemble([run_dir, member], out, weights="3,1", n_boot=50, log=lambda _: None)
    return out


def _test_images(count: int) -> np.ndarray:
    return load_dataset("synthetic").splits["test"].images[:count]


def test_one_pass_gives_the_step_by_step_answer(run_dir: Path) -> None:
    trained = load_trained_model(run_dir)
    for image in _test_images(4):
        fused = predict_and_gradcam(trained, image, trained.threshold, tta=True)
        expected = trained.predict_images(image[None], tta=True)[0]
        np.testing.assert_allclose(fused.probabilities, expected, atol=1e-6)
        stepwise = explain(trained, image, "gradcam", target_class=fused.target_class)
        np.testing.assert_allclose(fused.map, stepwise.map, atol=1e-5)
        assert fused.map.shape == image.shape[1:] and fused.map.max() == pytest.approx(1.0)


def test_served_class_maps_run_in_onnx_runtime_with_the_eager_answer(run_dir: Path) -> None:
    loaded = load_model(run_dir, "lesions", "1")
    assert loaded.class_maps is not None  # CompactResNet's head: Grad-CAM from one ORT pass
    for image in _test_images(4):
        served = predict_and_gradcam(
            loaded.trained, image, loaded.threshold, tta=True, class_maps=loaded.class_maps
        )
        eager = predict_and_gradcam(loaded.trained, image, loaded.threshold, tta=True)
        np.testing.assert_allclose(served.probabilities, eager.probabilities, atol=1e-5)
        assert served.target_class == eager.target_class
        np.testing.assert_allclose(served.map, eager.map, atol=1e-4)


def test_a_class_map_graph_that_differs_from_the_eager_model_is_not_used(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medsight.optimize import class_maps

    trained = load_trained_model(run_dir)
    export = class_maps._onnx_bytes

    def perturbed(model: torch.nn.Module, example: torch.Tensor) -> bytes:
        other = load_trained_model(run_dir).model
        with torch.no_grad():
            other.head[-1].bias.add_(0.1)
        return export(other, example)

    monkeypatch.setattr(class_maps, "_onnx_bytes", perturbed)
    assert class_maps.class_map_pass(trained.model, trained.spec) is None
    assert class_maps.class_map_pass(torch.nn.Linear(2, 2), trained.spec) is None  # no such head


SIGNAL_MODELS = {"cnn1d", "lstm", "gru", "cnn-gru"}  # 1D only


def test_the_card_and_the_server_both_read_the_class_map_head_from_the_model_class(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in MODELS:
        options = {"tabular_features": 3} if name == "fusion" else {}
        built = build_model(name, 1 if name in SIGNAL_MODELS else 2, 1, 2, **options)
        assert has_class_map_head(name) == hasattr(built, "logits_and_class_maps"), name
    assert has_class_map_head("compact-resnet") and not has_class_map_head("no-such-model")
    assert "one ONNX Runtime pass" in build_card(run_dir, None, None)["serving_variant"]
    assert load_model(run_dir, "lesions", "1").class_maps is not None

    monkeypatch.delattr(CompactResNet, "logits_and_class_maps")  # as an architecture without the head
    assert "one ONNX Runtime pass" not in build_card(run_dir, None, None)["serving_variant"]
    assert load_model(run_dir, "lesions", "1").class_maps is None


def test_the_serving_variant_loads_on_the_first_request_that_uses_it(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = shutil.copytree(run_dir, tmp_path / "run", ignore=shutil.ignore_patterns("exports", "variants"))
    export_run(run, "onnx", log=lambda _: None)
    (run / "serving.json").write_text(json.dumps({"variant": "onnx-fp32"}))
    loads = []

    def counted_load(*args: object) -> predictors.ServableModel:
        loads.append(args)
        time.sleep(0.2)  # a slow load, so two first requests overlap in it
        return load_variant(*args)

    load_variant = predictors.load_variant
    monkeypatch.setattr(predictors, "load_variant", counted_load)
    loaded = load_model(run, "lesions", "1")
    image = _test_images(1)[0]
    infer(loaded, image, "gradcam", image.shape[1:])
    assert loads == [] and not loaded.serving.loaded  # Grad-CAM: the class-map pass answered

    start = threading.Barrier(2)
    answers = []

    def occlusion() -> None:
        start.wait()
        answers.append(infer(loaded, image, "occlusion", image.shape[1:]).probabilities)

    threads = [threading.Thread(target=occlusion) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loads == [(run, "onnx-fp32")]
    onnx = loaded.serving.variant().predict_images(image[None], tta=loaded.tta)[0]
    for probabilities in answers:
        np.testing.assert_allclose(probabilities, onnx, atol=1e-6)


def test_ensemble_serves_its_mean_and_its_members_map(
    ensemble_dir: Path, run_dir: Path, store: Store, tmp_path: Path, run_cli
) -> None:
    assert ENSEMBLE_FILE == SERVED_ENSEMBLE_FILE  # predict recognises the folders optimize writes
    ensemble = load_ensemble(ensemble_dir)
    carded = register_run(store, ensemble_dir, "lesions-ensemble", default=True, user="test")
    assert carded.card["architecture"]["model"] == "ensemble of 2"
    assert [m["weight"] for m in carded.card["architecture"]["members"]] == pytest.approx([0.75, 0.25])
    add_user(store, "doc", Role.CLINICIAN, PASSWORD)
    client = TestClient(create_app(store))
    headers = bearer(create_token(store, "doc"))

    png = synthetic_test_png(0)
    image = np.array(Image.open(io.BytesIO(png)))[None, None]
    expected = ensemble.predict_images(image)[0]
    answer = client.post("/api/predict", files={"file": ("x.png", png, "image/png")}, headers=headers)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    np.testing.assert_allclose(body["probabilities"], expected, atol=1e-6)
    assert body["threshold"] == pytest.approx(ensemble.threshold)
    assert body["model"] == {"name": "lesions-ensemble", "version": "1"}
    index = int(expected[1] >= ensemble.threshold)
    assert body["label"] == ensemble.classes[index]
    heatmap = client.get(body["heatmap_url"], headers=headers)
    assert heatmap.status_code == 200 and heatmap.content.startswith(b"\x89PNG")

    loaded = load_model(ensemble_dir, "e", "1")
    mean_map = weighted_maps(loaded.members, [0.75, 0.25], image[0], index)
    served_map = np.asarray(Image.open(io.BytesIO(heatmap.content)), dtype=np.float64) / 255
    assert np.abs(served_map - mean_map).max() <= 1 / 255 + 1e-9  # the weighted mean, as an 8-bit PNG

    card = client.get("/api/models/lesions-ensemble", headers=headers).json()["latest"]
    assert "mean of the 2 members' maps" in card["heatmap"]
    assert "mean of the 2 members" in client.get("/api/models/lesions-ensemble/card", headers=headers).text

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.png").write_bytes(png)
    done = run_cli("predict", ensemble_dir, tmp_path / "in", "--out", tmp_path / "out.csv")
    assert done.returncode == 0, done.stdout + done.stderr
    (row,) = csv.DictReader((tmp_path / "out.csv").open())
    np.testing.assert_allclose(json.loads(row["probabilities"]), expected, atol=1e-5)


def test_an_ensemble_whose_member_is_gone_is_refused(
    ensemble_dir: Path, store: Store, tmp_path: Path
) -> None:
    moved = shutil.copytree(ensemble_dir, tmp_path / "ensemble")
    config = yaml.safe_load((moved / "config.yaml").read_text())
    config["config"]["members"][1] = str(tmp_path / "gone")
    (moved / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(BadInputError, match="member runs .*gone are missing"):
        register_run(store, moved, "broken")
