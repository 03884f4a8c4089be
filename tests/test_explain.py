"""Explanations: map shapes in 2D and 3D, localisation on the lesion phantoms, faithfulness, report, CLI."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from medsight.data import synthetic
from medsight.data.prepare import InputSpec, prepare_images
from medsight.data.registry import load_dataset
from medsight.errors import BadInputError, DataNotFoundError
from medsight.explain import explain, explain_images, map_png, overlay_png, target_layer_for
from medsight.explain.faithfulness import (
    curve_auc,
    perturbation_curves,
    randomisation_check,
    rank_correlation,
)
from medsight.explain.maps import input_maps, predicted_classes
from medsight.explain.overlay import choose_slice
from medsight.explain.run import explain_run
from medsight.models import build_model
from medsight.models.cnn import CompactResNet
from medsight.train.config import TrainConfig
from medsight.train.inference import TrainedModel, load_trained_model
from medsight.workflows import train_and_evaluate

FAST = {"image_size": 32, "bootstrap": 100, "num_threads": 1, "model_options": {"widths": [8, 16, 32]}}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory):
    """One small run on the lesion phantoms, trained, evaluated and explained by the workflow."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MEDSIGHT_HOME", str(tmp_path_factory.mktemp("home")))
        run = tmp_path_factory.mktemp("explain") / "run"
        metrics = train_and_evaluate(
            TrainConfig(dataset="synthetic", epochs=3, **FAST), run, log=lambda _: None
        )
    return run, metrics


def _untrained(spatial_dims: int, stored: int, size: int) -> tuple[TrainedModel, np.ndarray]:
    torch.manual_seed(0)
    model = CompactResNet(spatial_dims, 1, 2, widths=(4, 8)).eval()
    spec = InputSpec(
        spatial_dims=spatial_dims, channels=1, image_size=size, intensity="scale", mean=[0.5], std=[0.2]
    )
    image = np.random.default_rng(0).integers(0, 256, (1,) + (stored,) * spatial_dims).astype(np.uint8)
    return TrainedModel(model, spec, ["no", "yes"], None, {}), image


# --------------------------------------------------------------------------- maps


@pytest.mark.parametrize("method", ["gradcam", "occlusion"])
@pytest.mark.parametrize(("spatial_dims", "stored", "size"), [(2, 28, 32), (3, 20, 16)])
def test_map_has_the_stored_shape_and_lies_in_unit_range(method, spatial_dims, stored, size):
    trained, image = _untrained(spatial_dims, stored, size)
    explanation = explain(trained, image, method)

    assert explanation.map.shape == (stored,) * spatial_dims, (
        "resized to the stored image, not the network input"
    )
    assert explanation.map.min() >= 0.0 and explanation.map.max() <= 1.0
    assert explanation.method == method
    assert explanation.target_class == int(np.argmax(explanation.probabilities))
    assert explanation.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    if method == "gradcam":
        assert explanation.map.max() == pytest.approx(1.0), "each map is scaled to peak 1"
    hooks = [m._forward_hooks or m._backward_hooks for m in trained.model.modules()]
    assert not any(hooks), "Grad-CAM's hooks belong on a clone, never on the caller's model"


@pytest.mark.parametrize(("spatial_dims", "stored", "size"), [(2, 28, 32), (3, 20, 16)])
def test_one_pass_class_maps_equal_monai_gradcam(spatial_dims, stored, size, monkeypatch):
    """CompactResNet's head (average, then one linear layer) makes its class map Grad-CAM's exactly."""
    from medsight.explain.served import predict_and_gradcam

    trained, _ = _untrained(spatial_dims, stored, size)
    images = np.random.default_rng(1).integers(0, 256, (4, 1) + (stored,) * spatial_dims).astype(np.uint8)
    fast = [predict_and_gradcam(trained, image, 0.5) for image in images]
    monkeypatch.delattr(CompactResNet, "logits_and_class_maps")  # now MONAI's forward + backward pass
    slow = [predict_and_gradcam(trained, image, 0.5) for image in images]
    for one, other in zip(fast, slow, strict=True):
        assert one.target_class == other.target_class
        np.testing.assert_allclose(one.probabilities, other.probabilities, atol=1e-6)
        np.testing.assert_allclose(one.map, other.map, atol=1e-5)
        assert one.map.max() == pytest.approx(1.0)


def test_target_class_and_bad_input():
    trained, image = _untrained(2, 28, 32)
    assert explain(trained, image, target_class=1).target_class == 1
    with pytest.raises(BadInputError, match="between 0 and 1"):
        explain(trained, image, target_class=2)
    with pytest.raises(BadInputError, match="2D model"):
        explain(trained, image[None])


def test_target_layer_for_each_model_family():
    assert target_layer_for(CompactResNet(2, 1, 2, widths=(4, 8))) == "features"
    assert target_layer_for(build_model("resnet10", 2, 1, 2)) == "layer4"
    plain = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3))
    assert target_layer_for(plain) == "2", "unknown models: the last convolution"


# --------------------------------------------------------------------------- on a trained run


class _RecordingRng:
    """The generator the phantoms are drawn from, noting each lesion centre (the only 2-value draw)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.centres: list[np.ndarray] = []

    def __getattr__(self, name: str):
        return getattr(self.rng, name)

    def uniform(self, low=0.0, high=1.0, size=None):
        value = self.rng.uniform(low, high, size)
        if size == 2:
            self.centres.append(value)
        return value


def _test_lesions() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Replay the synthetic generator: the test split's images, labels and (y, x) lesion centres."""
    rng = _RecordingRng(1234)
    for name, n in synthetic.SPLIT_SIZES.items():
        rng.centres = []
        images, labels, _ = synthetic._phantoms(n, rng)
        if name == "test":
            return images, labels, np.array(rng.centres)
    raise AssertionError("no test split")


def test_gradcam_peaks_at_the_lesion(trained_run):
    run, _ = trained_run
    images, labels, centres = _test_lesions()
    stored = load_dataset("synthetic").splits["test"]
    assert np.array_equal(images, stored.images), "the replay must draw exactly the stored phantoms"
    lesion = images[labels == 1]
    maps, _, _ = explain_images(load_trained_model(run), lesion, "gradcam", np.ones(len(lesion), dtype=int))

    peaks = np.array([np.unravel_index(m.argmax(), m.shape) for m in maps])
    distance = np.linalg.norm(peaks - centres, axis=1)
    grid = np.stack(np.mgrid[: synthetic.SIZE, : synthetic.SIZE], -1).reshape(-1, 2)
    chance = np.array([np.linalg.norm(grid - c, axis=1).mean() for c in centres])  # a peak anywhere
    # a peak dropped at random lands ~13.5 px away on average, give or take ~0.5 px over these ~180 images:
    # three quarters of that is far outside chance, and a working model (~8 px; faint missed lesions
    # pull it up) clears it
    assert distance.mean() < 0.75 * chance.mean(), (distance.mean(), chance.mean())
    assert np.mean(distance < chance) > 0.65, "most peaks are closer than a random pixel would be"


def test_faithfulness_block_and_report(trained_run):
    run, metrics = trained_run
    on_disk = json.loads((run / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics)), "the workflow returns what it wrote"
    faith = on_disk["faithfulness"]
    assert faith["method"] == "gradcam" and faith["n"] == 32 and faith["split"] == "test"
    # Grad-CAM must clear a random map of the same coarseness on both curves
    assert faith["deletion_auc"]["mean"] < faith["random_deletion_auc"]["mean"], faith
    assert faith["insertion_auc"]["mean"] > faith["random_insertion_auc"]["mean"], faith
    assert abs(faith["randomisation_spearman"]["mean"]) < 0.5, faith["randomisation_cascade"]

    assert (run / "plots" / "explanations.png").stat().st_size > 1000
    html = (run / "report.html").read_text()
    assert 'alt="explanations"' in html and "Faithfulness of the explanations" in html
    assert "Deletion AUC" in html and "Spearman" in html
    assert 'alt="roc"' in html, "the evaluation's own plots survive the re-render"


def _class1_inputs(run, n: int = 16):
    trained = load_trained_model(run)
    split = load_dataset("synthetic").splits["test"]
    images = split.images[split.labels == 1][:n]
    targets = predicted_classes(trained.predict_images(images), trained.threshold)
    return trained, prepare_images(images, trained.spec), targets


def test_deletion_ranks_gradcam_above_its_inverse(trained_run):
    """The metric itself discriminates: deleting the least important pixels first must hurt less."""
    trained, inputs, targets = _class1_inputs(trained_run[0])
    maps = input_maps(trained.model, inputs, targets, "gradcam")
    deletion, _ = perturbation_curves(trained.model, inputs, maps, targets)
    inverse, _ = perturbation_curves(trained.model, inputs, 1.0 - maps, targets)
    assert curve_auc(deletion).mean() < curve_auc(inverse).mean()


def test_randomised_weights_change_the_map(trained_run):
    trained, inputs, targets = _class1_inputs(trained_run[0])
    once = input_maps(trained.model, inputs, targets, "gradcam")
    twice = input_maps(trained.model, inputs, targets, "gradcam")
    same = np.mean([rank_correlation(a, b) for a, b in zip(once, twice, strict=True)])
    cascade = randomisation_check(trained.model, inputs, targets, "gradcam")
    assert same == pytest.approx(1.0)
    assert cascade[-1]["randomised"] == "all layers"
    assert cascade[-1]["mean"] < same - 0.5, cascade


# --------------------------------------------------------------------------- pictures


def _decode(png: bytes) -> Image.Image:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    return Image.open(io.BytesIO(png))


def test_overlay_and_map_png():
    image = np.random.default_rng(0).integers(0, 256, (1, 28, 30)).astype(np.uint8)
    saliency = np.zeros((28, 30))
    saliency[10:14, 5:9] = 1.0
    overlay = _decode(overlay_png(image, saliency))
    assert overlay.size == (30, 28) and overlay.mode == "RGB"
    pixels = np.asarray(overlay, dtype=int)
    assert pixels[12, 7, 0] > pixels[12, 7, 2], "the hot spot is red in jet"

    raw = _decode(map_png(saliency))
    assert raw.size == (30, 28) and raw.mode == "L" and np.asarray(raw)[12, 7] == 255
    assert _decode(map_png(saliency, bits=16)).mode.startswith("I")

    rgb = np.random.default_rng(1).uniform(size=(3, 28, 30))
    assert _decode(overlay_png(rgb, saliency, opacity=0.2, colormap="inferno")).size == (30, 28)
    with pytest.raises(BadInputError, match="do not match"):
        overlay_png(image, np.zeros((10, 10)))


def test_overlay_of_a_volume_shows_the_slice_with_most_map():
    volume = np.random.default_rng(0).normal(size=(1, 8, 20, 24))
    saliency = np.zeros((8, 20, 24))
    saliency[5, 3:6, 3:6] = 1.0
    assert choose_slice(saliency) == 5 and choose_slice(np.zeros((8, 2, 2))) == 4
    assert _decode(overlay_png(volume, saliency)).size == (24, 20)
    assert _decode(map_png(saliency)).size == (24, 20)


# --------------------------------------------------------------------------- CLI


def test_cli_explain_missing_run(run_cli, tmp_path):
    result = run_cli("explain", tmp_path / "no-such-run")
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0 and "no such run folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_explain_occlusion_on_a_copy(run_cli, trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run[0], run)
    result = run_cli("explain", run, "--method", "occlusion", "--n", "8", OMP_NUM_THREADS="1")
    assert result.returncode == 0, result.stderr
    assert "faithfulness (occlusion, 8 test cases)" in result.stdout
    faith = json.loads((run / "metrics.json").read_text())["faithfulness"]
    assert faith["method"] == "occlusion" and faith["n"] == 8


def test_explain_run_needs_an_evaluated_run(tmp_path):
    (tmp_path / "config.yaml").write_text("config: {}")
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(DataNotFoundError, match="medsight evaluate"):
        explain_run(tmp_path)
