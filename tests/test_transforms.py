"""Tests of medsight.data.transforms: preprocessing presets and modality-aware augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import RandFlip, RandRotate90

from medsight.data.transforms import CT_WINDOWS, augmentation, intensity_transform, preprocess_images
from medsight.errors import ConfigError


def uint8_images(n: int = 4, size: int = 28) -> np.ndarray:
    images = np.random.default_rng(0).integers(0, 256, (n, 1, size, size), dtype=np.uint8)
    images[0, 0, 0, 0], images[0, 0, 0, 1] = 0, 255
    return images


def test_scale_maps_uint8_range_to_unit_interval():
    images = uint8_images()
    out = preprocess_images(images, intensity="scale", size=28)
    assert isinstance(out, torch.Tensor)
    assert out.shape == (4, 1, 28, 28) and out.dtype == torch.float32
    assert out.min() == 0.0 and out.max() == 1.0
    torch.testing.assert_close(out, torch.from_numpy(images / 255.0).float())


def test_scale_keeps_relative_intensity_of_a_dark_image():
    dark = np.full((1, 1, 8, 8), 51, np.uint8)  # "scale" is not min-max: a dark image stays dark
    assert preprocess_images(dark, intensity="scale", size=None).unique().tolist() == pytest.approx([0.2])


def test_resize_and_channels():
    out = preprocess_images(uint8_images(), intensity="minmax", size=32, channels=3)
    assert out.shape == (4, 3, 32, 32) and out.dtype == torch.float32
    assert out.min() >= 0.0 and out.max() <= 1.0 + 1e-5
    volumes = np.zeros((2, 1, 10, 10, 10), np.uint8)
    assert preprocess_images(volumes, intensity="scale", size=16).shape == (2, 1, 16, 16, 16)


def test_ct_window_clips_hounsfield_units():
    level, width = CT_WINDOWS["brain"]
    hu = np.array([-1000, level - width / 2, level, level + width / 2, 2000], np.float32)
    images = np.broadcast_to(hu, (5, 5)).reshape(1, 1, 5, 5).copy()
    out = preprocess_images(images, intensity="ct-brain", size=None)[0, 0, 0]
    assert out.tolist() == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0])


def test_unknown_presets_are_config_errors():
    with pytest.raises(ConfigError, match="unknown intensity preset 'sharpen'"):
        preprocess_images(uint8_images(), intensity="sharpen", size=28)
    with pytest.raises(ConfigError, match="unknown CT window"):
        intensity_transform("ct-liver", np.dtype(np.float32))
    with pytest.raises(ConfigError, match="denoise"):
        preprocess_images(uint8_images(), intensity="scale", size=28, denoise="wavelet")
    with pytest.raises(ConfigError, match="augmentation level"):
        augmentation("xray", 2, "extreme")


def test_xray_augmentation_never_flips():
    for level in ("light", "standard", "strong"):
        steps = augmentation("xray", 2, level).transforms
        assert steps, level
        assert not any(isinstance(t, (RandFlip, RandRotate90)) for t in steps), level


def test_shape_augmentation_flips_and_keeps_3d_shape():
    pipeline = augmentation("shape", 3, "strong")
    assert sum(isinstance(t, RandFlip) for t in pipeline.transforms) == 3
    pipeline.set_random_state(seed=0)
    volume = torch.zeros(1, 28, 28, 28)
    volume[:, 8:20, 10:18, 6:22] = 1.0
    for _ in range(3):
        out = pipeline(volume)
        assert tuple(out.shape) == (1, 28, 28, 28)
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0 + 1e-5  # no intensity change on a mask


def test_no_augmentation_level_none():
    assert augmentation("xray", 2, "none") is None
