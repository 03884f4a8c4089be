"""Shared by the prediction tests: one tiny trained run per session, an app over a store with it
registered and a user per role, and images made in memory."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI
from PIL import Image

from medsight.predict.registration import register_run
from medsight.serve import create_app
from medsight.store import Role, Store, add_user, create_token
from medsight.train.config import TrainConfig
from medsight.train.run_folder import read_status

PASSWORD = "correct horse battery"
MODEL = "lesion"


def tiny_run(factory: pytest.TempPathFactory) -> Path:
    """A 2-epoch compact CNN on the synthetic set at 32 px, trained once per test session (~30 s)."""
    from medsight.workflows import train_and_evaluate

    run_dir = factory.getbasetemp() / "predict-tiny-run"
    if read_status(run_dir).get("status") == "complete":
        return run_dir
    config = TrainConfig(
        dataset="synthetic",
        epochs=2,
        image_size=32,
        bootstrap=100,
        augment="none",
        num_workers=0,
        model_options={"widths": [8, 16, 32]},
    )
    with pytest.MonkeyPatch.context() as patch:  # module-scoped: conftest's per-test home is not set yet
        patch.setenv("MEDSIGHT_HOME", str(factory.mktemp("train-home")))
        train_and_evaluate(config, run_dir, log=lambda _: None)
    return run_dir


def app_with_model(store: Store, run_dir: Path) -> tuple[FastAPI, dict[str, str]]:
    """The app over ``store`` with the run registered as the default model, and a token per role
    (plus a second clinician, ``clinician2``)."""
    register_run(store, run_dir, MODEL, "1", default=True, user="test")
    tokens = {}
    for name, role in [(r.value, r) for r in Role] + [("clinician2", Role.CLINICIAN)]:
        add_user(store, f"{name}-user", role, PASSWORD)
        tokens[name] = create_token(store, f"{name}-user")
    return create_app(store), tokens


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def synthetic_test_png(index: int = 0) -> bytes:
    """A test-split image of the synthetic set (what the model was trained for), as a PNG."""
    from medsight.data.registry import load_dataset

    image = load_dataset("synthetic").splits["test"].images[index]
    return png_bytes(np.asarray(image[0], dtype=np.uint8))


def huge_png(side: int = 10_000) -> bytes:
    """A side x side grey PNG of zeros, written row by row: ~100 kB on disk, never 100 MB in memory."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row, idat = zlib.compressobj(9), b"\x00" * (side + 1), []  # filter byte 0 + pixels
    for _ in range(side):
        idat.append(packer.compress(row))
    idat.append(packer.flush())
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(idat)) + chunk(b"IEND", b"")
    )


def two_channel_nifti() -> bytes:
    """A 2D NIfTI image with 2 channels: neither grey nor RGB, so it cannot be converted."""
    import nibabel as nib

    volume = np.zeros((32, 32, 1, 2), dtype=np.float32)
    return nib.Nifti1Image(volume, np.eye(4)).to_bytes()


def tiny_segmentation_run(factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 2-epoch U-Net on six real DRIVE photographs shrunk 4x (~5 s), once per test session; the run
    folder and the folder of its PNGs (``NN_image.png``, ``NN_mask.png``, ``NN_roi.png``)."""
    from conftest import SHARED_DATA
    from test_segmentation import DRIVE_IDS, _drive_file, _small, write_manifest

    base = factory.getbasetemp()
    run_dir, pictures = base / "predict-tiny-segmentation", base / "predict-tiny-drive"
    if read_status(run_dir).get("status") == "complete":
        return run_dir, pictures
    pictures.mkdir(exist_ok=True)
    rows = []
    for number, split in zip(DRIVE_IDS, ["train", "train", "train", "val", "test", "test"], strict=True):
        for kind, column in (("images", "image"), ("1st_manual", "mask"), ("mask", "roi")):
            _small(_drive_file(SHARED_DATA, kind, number), nearest=kind != "images").save(
                pictures / f"{number}_{column}.png"
            )
        rows.append([f"{number}_image.png", f"{number}_mask.png", f"{number}_roi.png", f"p{number}", split])
    manifest = write_manifest(
        pictures / "manifest.csv", ["image", "mask", "roi", "patient_id", "split"], rows
    )
    return train_tiny_segmentation(factory, manifest, "tiny-drive", run_dir, [32, 32]), pictures


def train_tiny_segmentation(
    factory: pytest.TempPathFactory,
    manifest: Path,
    name: str,
    run_dir: Path,
    patch_size: list[int],
    modality: str | None = None,
) -> Path:
    """``manifest`` imported as data set ``name`` and a small U-Net trained on it for 2 epochs of 64
    patches into ``run_dir``, in a MEDSIGHT_HOME of its own (the run folder outlives the test)."""
    from conftest import SHARED_DATA

    from medsight.data.segmentation_registry import import_segmentation
    from medsight.workflows import train_and_evaluate

    config = TrainConfig(
        dataset=name,
        task="segmentation",
        task_options={"patch_size": patch_size, "patches_per_epoch": 64},
        model_options={"channels": [8, 16, 32]},
        epochs=2,
        batch_size=8,
        bootstrap=50,
        num_workers=0,
        lr=1e-2,
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDSIGHT_HOME", str(factory.mktemp(f"{name}-home")))
        patch.setenv("MEDSIGHT_DATA", str(SHARED_DATA))
        import_segmentation(manifest, name=name, modality=modality)
        train_and_evaluate(config, run_dir, log=lambda _: None)
    return run_dir


def tiny_ecg_run(factory: pytest.TempPathFactory) -> Path:
    """A 1-epoch 1D CNN beat model on three real MIT-BIH records (~10 s), once per test session."""
    from conftest import SHARED_DATA
    from test_ecg import TINY_RECORDS

    from medsight.workflows import train_and_evaluate

    run_dir = factory.getbasetemp() / "predict-tiny-ecg"
    if read_status(run_dir).get("status") == "complete":
        return run_dir
    data = factory.mktemp("ecg-data")
    (data / "ecg" / "mitdb").mkdir(parents=True)
    for record in TINY_RECORDS:
        (data / "ecg" / "mitdb" / f"{record}.npz").symlink_to(SHARED_DATA / "ecg" / "mitdb" / f"{record}.npz")
    config = TrainConfig(
        dataset="mitdb-pvc",
        epochs=1,
        bootstrap=50,
        num_workers=0,
        model_options={"widths": [8, 16], "kernel": 5},
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDSIGHT_HOME", str(factory.mktemp("ecg-home")))
        patch.setenv("MEDSIGHT_DATA", str(data))
        train_and_evaluate(config, run_dir, log=lambda _: None)
    return run_dir
