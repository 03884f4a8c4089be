"""Tests of medsight.io.read_image: PNG, JPEG, DICOM, NIfTI into one form, and refusals that name the file."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from medsight.errors import BadInputError
from medsight.io import read_image, sniff_format


def pydicom_test_file(name: str) -> Path:
    path = get_testdata_file(name, download=False)  # never the network: only files shipped with pydicom
    if path is None:
        pytest.fail(f"pydicom's test file {name} is not installed with pydicom", pytrace=False)
    return Path(path)


def gradient(height: int = 20, width: int = 30) -> np.ndarray:
    return (np.add.outer(np.arange(height) * 5, np.arange(width) * 3) % 256).astype(np.uint8)


# -- PNG and JPEG -------------------------------------------------------------------------------------
def test_grey_png(tmp_path):
    pixels = gradient()
    Image.fromarray(pixels).save(tmp_path / "grey.png")
    image = read_image(tmp_path / "grey.png")
    assert image.array.shape == (1, 20, 30)
    assert image.array.dtype == np.float32
    np.testing.assert_array_equal(image.array[0], pixels)
    assert image.spatial_dims == 2 and image.spacing is None


def test_rgb_png_is_channel_first(tmp_path):
    rgb = np.stack([gradient(), 255 - gradient(), np.full((20, 30), 7, np.uint8)], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "colour.png")
    image = read_image(tmp_path / "colour.png")
    assert image.array.shape == (3, 20, 30)
    np.testing.assert_array_equal(image.array, np.moveaxis(rgb, -1, 0))


def test_16_bit_png_keeps_its_range(tmp_path):
    pixels = (np.arange(20 * 30).reshape(20, 30) * 97).astype(np.uint16)
    Image.fromarray(pixels).save(tmp_path / "deep.png")
    image = read_image(tmp_path / "deep.png")
    assert image.array.shape == (1, 20, 30)
    assert image.array.max() == pixels.max() > 255


def test_jpeg_found_by_content_not_name(tmp_path):
    pixels = np.full((32, 48), 100, np.uint8)
    pixels[:, 24:] = 200
    Image.fromarray(pixels).save(tmp_path / "scan.jpg", quality=95)
    (tmp_path / "scan.jpg").rename(tmp_path / "scan.dat")
    image = read_image(tmp_path / "scan.dat")
    assert image.array.shape == (1, 32, 48)
    assert abs(image.array[0, :, :20].mean() - 100) < 3 and abs(image.array[0, :, 28:].mean() - 200) < 3


def test_text_named_png_is_refused(tmp_path):
    fake = tmp_path / "report.png"
    fake.write_text("Findings: no acute cardiopulmonary process.\n")
    with pytest.raises(BadInputError, match="not a PNG, JPEG, DICOM or NIfTI") as err:
        read_image(fake)
    assert str(fake) in str(err.value)


def test_truncated_png_names_the_file(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (128, 128), dtype=np.uint8)
    whole = tmp_path / "whole.png"
    Image.fromarray(noise).save(whole)
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(BadInputError) as err:
        read_image(cut)
    assert str(cut) in str(err.value)
    assert "PNG" in str(err.value)


def test_missing_file_is_bad_input(tmp_path):
    with pytest.raises(BadInputError, match="cannot read"):
        read_image(tmp_path / "nowhere.png")


# -- DICOM --------------------------------------------------------------------------------------------
def test_real_ct_slice_in_hounsfield_units(shared_data):
    image = read_image(shared_data / "dicom" / "ct_head_ge" / "01.dcm")
    assert image.array.shape == (1, 512, 512)
    assert image.array.dtype == np.float32
    assert image.array.min() < -500  # air outside the head
    assert 1000 < image.array.max() < 4000  # skull, not raw stored values
    assert image.spacing == pytest.approx((0.488, 0.488), abs=0.001)
    assert image.metadata == {"format": "dicom", "modality": "CT"}


def test_pydicom_mr_and_rle_files():
    plain = read_image(pydicom_test_file("MR_small.dcm"))
    assert plain.array.shape == (1, 64, 64)
    assert plain.metadata["modality"] == "MR"
    rle = read_image(pydicom_test_file("MR_small_RLE.dcm"))  # compressed: same pixels once decoded
    np.testing.assert_array_equal(rle.array, plain.array)


def test_pydicom_ct_applies_rescale():
    path = pydicom_test_file("CT_small.dcm")
    dataset = pydicom.dcmread(path)
    image = read_image(path)
    expected = dataset.pixel_array * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)
    np.testing.assert_allclose(image.array[0], expected)


def test_dicom_without_pixel_data(tmp_path):
    rtplan = read_image_error(pydicom_test_file("rtplan.dcm"))
    assert "no pixel data" in rtplan

    dataset = pydicom.dcmread(pydicom_test_file("MR_small.dcm"))
    del dataset.PixelData
    stripped = tmp_path / "header-only.dcm"
    dataset.save_as(stripped)
    message = read_image_error(stripped)
    assert "no pixel data" in message and str(stripped) in message


def read_image_error(path: Path) -> str:
    with pytest.raises(BadInputError) as err:
        read_image(path)
    return str(err.value)


# -- NIfTI --------------------------------------------------------------------------------------------
def test_nifti_2d(tmp_path):
    rows_cols = np.arange(20 * 30, dtype=np.float32).reshape(20, 30)
    affine = np.diag([0.5, 0.8, 1.0, 1.0])
    nib.save(nib.Nifti1Image(rows_cols.T, affine), tmp_path / "slice.nii")  # NIfTI stores (x, y)
    image = read_image(tmp_path / "slice.nii")
    assert image.array.shape == (1, 20, 30)
    np.testing.assert_array_equal(image.array[0], rows_cols)
    assert image.spacing == pytest.approx((0.8, 0.5))  # (rows, cols)


def test_nifti_3d_gz(tmp_path):
    volume_xyz = np.random.default_rng(2).normal(size=(12, 10, 8)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume_xyz, np.diag([1.0, 2.0, 3.0, 1.0])), tmp_path / "vol.nii.gz")
    assert sniff_format((tmp_path / "vol.nii.gz").read_bytes()[:4]) == "nifti"
    image = read_image(tmp_path / "vol.nii.gz")
    assert image.array.shape == (1, 8, 10, 12)  # (C, z, y, x)
    np.testing.assert_allclose(image.array[0], np.transpose(volume_xyz, (2, 1, 0)))
    assert image.spatial_dims == 3
    assert image.spacing == pytest.approx((3.0, 2.0, 1.0))


def test_nifti_4d_time_series_is_refused(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 5), np.float32), np.eye(4)), tmp_path / "fmri.nii")
    with pytest.raises(BadInputError, match="expected a 2D image or a 3D volume"):
        read_image(tmp_path / "fmri.nii")


def test_corrupt_gzip_named_nii_gz(tmp_path):
    bad = tmp_path / "vol.nii.gz"
    bad.write_bytes(b"\x1f\x8b" + b"\x00" * 64)
    with pytest.raises(BadInputError) as err:
        read_image(bad)
    assert str(bad) in str(err.value)
