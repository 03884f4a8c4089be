"""For the series tests: tiny model run folders made in seconds, and DICOM slices edited into bad series."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
import yaml
from pydicom import Dataset

from medsight.data.prepare import InputSpec, prepare_images
from medsight.io.volume import Volume
from medsight.models import build_model

CT_SERIES = "dicom/ct_head_ge"
FMRI_SERIES = "dicom/mr_brain_epi_ge"
CLASSES = ["normal", "hyperplasia"]


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count half): no scikit-learn import for a test helper."""
    positive, negative = scores[labels == 1], scores[labels == 0]
    wins = (positive[:, None] > negative[None]).sum() + 0.5 * (positive[:, None] == negative[None]).sum()
    return float(wins / (len(positive) * len(negative)))


def tiny_run(run_dir: Path, shared_data: Path, spatial_dims: int, size: int = 16) -> Path:
    """A complete run folder on AdrenalMNIST3D (3D) or its middle slices (2D), made in seconds.

    3D convolutions' backward pass is slow on a shared CPU, so only the classifier head is trained:
    the convolutions keep their random weights (BatchNorm statistics taken from real volumes) and the
    last linear layer is fitted on their pooled features. Evaluated on the validation split.
    """
    arrays = np.load(shared_data / "medmnist" / "adrenalmnist3d.npz")
    images, labels = arrays["train_images"][:192, None], arrays["train_labels"][:192, 0].astype(np.int64)
    val_images, val_labels = arrays["val_images"][:, None], arrays["val_labels"][:, 0]
    if spatial_dims == 2:  # the middle slice of each volume: a 2D model of the same task
        images, val_images = images[:, :, 14], val_images[:, :, 14]
    images, val_images = _shrunk(images, size), _shrunk(val_images, size)
    raw = InputSpec(
        spatial_dims=spatial_dims, channels=1, image_size=size, intensity="scale", mean=[0.0], std=[1.0]
    )
    inputs = prepare_images(images, raw)
    spec = raw.model_copy(update={"mean": [float(inputs.mean())], "std": [float(inputs.std())]})
    inputs = prepare_images(images, spec)
    torch.manual_seed(0)
    model = build_model("compact-resnet", spatial_dims, 1, 2, widths=[4, 8, 8])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread is faster, and far faster on a busy CPU
    try:
        _fit_head(model, inputs, torch.from_numpy(labels))
        with torch.no_grad():
            scores = torch.softmax(model(prepare_images(val_images, spec)), 1)[:, 1].numpy()
    finally:
        torch.set_num_threads(threads)
    _write_run(run_dir, model, spec, spatial_dims, _auc(val_labels, scores), len(val_labels))
    return run_dir


def _shrunk(images: np.ndarray, size: int) -> np.ndarray:
    """Area-averaged to ``size`` per side here, once: MONAI's anti-aliased Resize is slow per volume."""
    tensor = torch.from_numpy(images.astype(np.float32))
    shrunk = torch.nn.functional.interpolate(tensor, size=(size,) * (images.ndim - 2), mode="area")
    return np.rint(shrunk.numpy()).astype(np.uint8)


def _fit_head(model: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> None:
    for module in model.modules():  # BatchNorm: a plain average over the batches below
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None
    model.train()
    with torch.no_grad():
        for start in range(0, len(inputs), 64):
            model(inputs[start : start + 64])
    model.eval()
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    captured: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda _m, args, _out: captured.append(args[0].detach()))
    with torch.no_grad():
        model(inputs)
    hook.remove()
    features = captured[0]
    optimiser = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(300):
        loss = torch.nn.functional.cross_entropy(head(features), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


def _write_run(run_dir: Path, model: torch.nn.Module, spec: InputSpec, dims: int, auc: float, n: int) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    info = {
        "model": "compact-resnet",
        "model_options": {"widths": [4, 8, 8]},
        "classes": CLASSES,
        "input": spec.model_dump(),
        "modality": "shape",
        "dataset": "adrenalmnist3d",
    }
    torch.save(
        {"inference": info, "best_state": model.state_dict(), "history": []}, run_dir / "checkpoint.pt"
    )
    config = {
        "dataset": "adrenalmnist3d",
        "model": "compact-resnet",
        "image_size": spec.image_size,
        "tta": False,
    }
    fingerprint = {"spatial_dims": dims, "channels": 1, "modality": "shape", "n_train": 512}
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"config": config, "fingerprint": fingerprint}))
    val = {"n": n, "auc": auc, "classes": CLASSES}
    metrics = {"dataset": "adrenalmnist3d", "threshold": 0.5, "threshold_rule": "fixed", "val": val}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    (run_dir / "run.json").write_text(json.dumps({"status": "complete"}))


def read_folder(folder: Path) -> list[Dataset]:
    return [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]


def reoriented(dataset: Dataset, cosines: list[float]) -> Dataset:
    """A copy of ``dataset`` whose slice plane is turned (as a localizer's other planes would be)."""
    changed = copy.deepcopy(dataset)
    changed.ImageOrientationPatient = cosines
    return changed


def with_series(dataset: Dataset, uid: str, number: int) -> Dataset:
    changed = copy.deepcopy(dataset)
    changed.SeriesInstanceUID, changed.SeriesNumber = uid, number
    return changed


def pixel_lps(dataset: Dataset, row: float, col: float) -> np.ndarray:
    """LPS millimetres of pixel (row, col) of a slice, from its own header."""
    position = np.array(dataset.ImagePositionPatient, dtype=float)
    cosines = np.array(dataset.ImageOrientationPatient, dtype=float)
    spacing = np.array(dataset.PixelSpacing, dtype=float)
    return position + col * spacing[1] * cosines[:3] + row * spacing[0] * cosines[3:]


BONE_HU = 300.0  # CT voxels above this are bone: the tiny segmentation run's label
BONE_SPACING = (3.0, 3.0, 3.0)  # mm (x, y, z): coarse, so that training and inference take seconds


def bone_segmentation_run(factory: pytest.TempPathFactory) -> Path:
    """A 3D U-Net trained by the engine ``medsight train`` runs to outline bone (HU > 300) in the real
    head CT (~20 s), once per test session.

    There is no labelled 3D set here, so the label is derived from the image itself. The series (read as
    serving reads it: tilt and uneven spacing corrected, RAS) is resampled to 3 mm and cut into its four
    quarters in the axial plane, which stand in for four cases (two train, one val, one test) since a
    data set needs its splits: a test of the serving path, not a measure of generalisation.
    """
    from conftest import SHARED_DATA
    from predict_helpers import train_tiny_segmentation

    from medsight.io.nifti import write_nifti
    from medsight.io.series import read_series
    from medsight.io.volume import canonical, resample
    from medsight.train.run_folder import read_status

    run_dir, cases = factory.getbasetemp() / "bone-3d-run", factory.getbasetemp() / "bone-3d-cases"
    if read_status(run_dir).get("status") == "complete":
        return run_dir
    volume = resample(canonical(read_series(SHARED_DATA / CT_SERIES)), BONE_SPACING)
    _, rows, columns = volume.array.shape
    rows_cut, columns_cut = rows // 2, columns // 2
    lines = ["image,mask,patient_id,split"]
    for k, (y, x) in enumerate([(0, 0), (0, columns_cut), (rows_cut, 0), (rows_cut, columns_cut)]):
        part = volume.array[:, y : y + rows_cut, x : x + columns_cut]
        affine = volume.affine.copy()
        affine[:3, 3] = volume.world((x, y, 0))
        write_nifti(Volume(part, affine), cases / f"q{k}_image.nii.gz")
        write_nifti(Volume((part > BONE_HU).astype(np.float32), affine), cases / f"q{k}_mask.nii.gz")
        lines.append(f"q{k}_image.nii.gz,q{k}_mask.nii.gz,q{k},{['train', 'train', 'val', 'test'][k]}")
    (cases / "manifest.csv").write_text("\n".join(lines) + "\n")
    return train_tiny_segmentation(factory, cases / "manifest.csv", "ct-bone", run_dir, [16, 32, 32], "ct")
