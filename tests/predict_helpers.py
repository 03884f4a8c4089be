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
