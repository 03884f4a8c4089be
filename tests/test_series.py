"""DICOM series -> volume on real data (a gantry-tilted, unevenly spaced head CT; a 4D fMRI run), bad series
refused, NIfTI round trip, resampling, ``medsight convert``, and POST /api/predict on a whole stored series."""

from __future__ import annotations

import copy
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient
from predict_helpers import PASSWORD, bearer
from pydicom import Dataset
from scipy.ndimage import map_coordinates
from series_helpers import (
    CT_SERIES,
    FMRI_SERIES,
    pixel_lps,
    read_folder,
    reoriented,
    tiny_run,
    with_series,
)
from typer.testing import CliRunner

from medsight.cli import app as cli_app
from medsight.errors import BadInputError
from medsight.io import read_image
from medsight.io.nifti import read_nifti, write_nifti
from medsight.io.series import read_series, rescaled_pixels
from medsight.io.volume import LPS_TO_RAS, Volume, orthogonal, resample
from medsight.store import Role, Store, add_user, create_token

RAS = np.array([-1.0, -1.0, 1.0])  # LPS -> RAS for points


@pytest.fixture(scope="module")
def ct_slices() -> list[Dataset]:
    from conftest import SHARED_DATA

    return read_folder(SHARED_DATA / CT_SERIES)


@pytest.fixture(scope="module")
def ct_volume(ct_slices: list[Dataset]) -> Volume:
    return read_series(ct_slices[::-1])  # reversed: the order given must not matter


@pytest.fixture(scope="module")
def fmri_slices() -> list[Dataset]:
    from conftest import SHARED_DATA

    return read_folder(SHARED_DATA / FMRI_SERIES)


def _by_instance(slices: list[Dataset]) -> dict[int, Dataset]:
    return {int(d.InstanceNumber): d for d in slices}


def test_ct_gantry_tilt_and_uneven_spacing_are_corrected_onto_a_regular_grid(
    ct_volume: Volume, ct_slices: list[Dataset]
) -> None:
    volume = ct_volume
    assert abs(volume.metadata["tilt_degrees"] - 18.5) < 0.05  # the header's GantryDetectorTilt is 18.5
    tilt, uneven = volume.corrections
    assert "gantry tilt of 18.50 degrees" in tilt and "header says 18.5" in tilt
    assert "uneven slice spacing (1.08 to 7.00 mm)" in uneven
    # like dcm2niix: the smallest gap (1.08 mm) would need 134 slices, capped at twice the 28 acquired
    assert volume.array.shape == (56, 512, 512) and orthogonal(volume.affine)
    x, y, z = volume.spacing
    assert abs(x - 0.48828) < 1e-4 and abs(y - 0.48828) < 1e-4
    first, last = _by_instance(ct_slices)[1], _by_instance(ct_slices)[28]
    span = (np.array(last.ImagePositionPatient, float) - first.ImagePositionPatient) @ np.cross(
        np.array(first.ImageOrientationPatient[:3], float), np.array(first.ImageOrientationPatient[3:], float)
    )
    assert abs(z - span / 55) < 1e-6  # one spacing from the first acquired slice to the last
    assert np.allclose(volume.world((0, 0, 0)), pixel_lps(first, 0, 0) * RAS, atol=1e-4)
    for instance, grid_slice in ((1, 0), (28, 55)):
        source = _by_instance(ct_slices)[instance]
        for row, col in ((0, 0), (511, 511), (0, 511)):
            x_i, y_i, z_i = volume.index(pixel_lps(source, row, col) * RAS)
            # corners of the acquired slice lie in a grid slice at their column (within 1e-3 voxel); tilt moves rows
            assert abs(z_i - grid_slice) < 1e-3 and abs(x_i - col) < 1e-3
            if instance == 1:
                assert abs(y_i - row) < 1e-3
        # voxel values at the same physical point agree with the acquired slice (bilinear in its plane)
        pixels = rescaled_pixels(source)
        for y_out, x_out in ((200, 256), (300, 100), (400, 400)):
            point = volume.world((x_out, y_out, grid_slice)) * RAS  # back to LPS
            rel = point - np.array(source.ImagePositionPatient, float)
            cosines = np.array(source.ImageOrientationPatient, float)
            spacing = np.array(source.PixelSpacing, float)
            where = [[rel @ cosines[3:] / spacing[0]], [rel @ cosines[:3] / spacing[1]]]
            expected = map_coordinates(pixels, where, order=1)[0]
            assert abs(volume.array[grid_slice, y_out, x_out] - expected) < 0.01


def test_evenly_spaced_series_is_stacked_as_is_and_4d_is_split_by_time(fmri_slices: list[Dataset]) -> None:
    with pytest.raises(BadInputError, match="10 volumes of 15 slices.*--volume"):
        read_series(fmri_slices)
    for index in (0, 9):
        volume = read_series(fmri_slices[::-1], volume_index=index)
        assert volume.corrections == [] and volume.array.shape == (15, 64, 64)
        assert np.allclose(volume.spacing, (3.75, 3.75, 5.0))
        # volume t holds instances 15t+1 .. 15t+15, stacked by position (here: in instance order)
        expected = [rescaled_pixels(_by_instance(fmri_slices)[15 * index + k]) for k in range(1, 16)]
        assert np.array_equal(volume.array, np.stack(expected))
        origin = np.array(_by_instance(fmri_slices)[15 * index + 1].ImagePositionPatient, float)
        assert np.allclose(volume.origin, origin * RAS)
    with pytest.raises(BadInputError, match="repeat unevenly.*missing"):
        read_series(fmri_slices[:149], volume_index=0)


def test_bad_series_are_refused_with_what_to_do(ct_slices: list[Dataset]) -> None:
    sagittal = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
    mixed = ct_slices[:10] + [reoriented(d, sagittal) for d in ct_slices[10:13]]
    with pytest.raises(BadInputError, match="mixes 2 slice orientations") as refused:
        read_series(mixed)
    assert str(ct_slices[0].PatientID) not in str(refused.value)  # no header values in messages

    holed = ct_slices[:5] + ct_slices[6:13]  # the 6th slice is missing: an 8 mm gap among 4 mm ones
    with pytest.raises(BadInputError, match=r"gap of 8.00 mm .*instance number 5.*--allow-gaps"):
        read_series(holed)
    bridged = read_series(holed, allow_gaps=True)
    assert any("missing slices" in note for note in bridged.corrections)

    two = ct_slices[:6] + [with_series(d, "1.2.3.4", 7) for d in ct_slices[6:12]]
    with pytest.raises(BadInputError, match="2 series .*series number 7: 6 CT images.*--series"):
        read_series(two)
    assert read_series(two, series_number=7).array.shape[0] >= 6

    unplaced = [copy.deepcopy(d) for d in ct_slices[:3]]
    del unplaced[1].ImagePositionPatient
    with pytest.raises(BadInputError, match="lacks ImagePositionPatient"):
        read_series(unplaced)


def test_nifti_round_trip_and_resampling_keep_the_geometry(
    fmri_slices: list[Dataset], ct_volume: Volume, tmp_path: Path
) -> None:
    volume = read_series(fmri_slices, volume_index=3)
    path = write_nifti(volume, tmp_path / "fmri.nii.gz")
    image = nib.load(str(path))
    assert image.get_data_dtype() == np.int16 and image.shape == (64, 64, 15)  # (x, y, z), lossless ints
    assert int(image.header["sform_code"]) == 1 == int(image.header["qform_code"])
    assert nib.aff2axcodes(image.affine) == ("L", "P", "S")  # DICOM's axes kept, named in RAS terms
    back = read_nifti(path)
    assert np.array_equal(back.array, volume.array) and np.allclose(back.affine, volume.affine)

    corrected = write_nifti(ct_volume, tmp_path / "ct.nii")
    again = read_nifti(corrected)
    assert np.allclose(again.array, ct_volume.array) and np.allclose(
        again.affine, ct_volume.affine, atol=1e-5
    )
    assert np.allclose(LPS_TO_RAS @ LPS_TO_RAS, np.eye(4))

    coarse = resample(volume, (7.5, 7.5, 10.0))
    assert coarse.array.shape == (8, 32, 32) and np.allclose(coarse.spacing, (7.5, 7.5, 10.0))
    assert np.allclose(coarse.world((0, 0, 0)), volume.world((0, 0, 0)))
    assert np.allclose(coarse.world((31, 31, 7)), volume.world((62, 62, 14)))
    assert "resampled from 3.75 x 3.75 x 5" in coarse.corrections[-1]
    with pytest.raises(BadInputError, match="three positive numbers"):
        resample(volume, (1.0, 0.0, 1.0))


def test_read_image_takes_a_series_folder_or_zip(shared_data: Path, tmp_path: Path) -> None:
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted((shared_data / CT_SERIES).glob("*.dcm"))[:14]:  # the evenly spaced 4 mm part
            handle.write(path, f"ct/{path.name}")
        handle.writestr("ct/README.txt", "not an image")
    image = read_image(archive)
    assert image.array.shape == (1, 14, 512, 512) and image.metadata["format"] == "dicom-series"
    assert abs(image.spacing[0] - 4.0) < 0.01 and len(image.metadata["corrections"]) == 1  # tilt only
    with pytest.raises(BadInputError, match="10 volumes"):
        read_image(shared_data / FMRI_SERIES)


def test_cli_convert_writes_a_resampled_nifti_and_refuses_a_4d_series(
    shared_data: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    out = tmp_path / "fmri.nii.gz"
    args = [
        "convert",
        str(shared_data / FMRI_SERIES),
        "--out",
        str(out),
        "--volume",
        "2",
        "--spacing",
        "7.5,7.5,5",
    ]
    done = runner.invoke(cli_app, args)
    assert done.exit_code == 0, done.output
    assert "32 x 32 x 15 voxels of 7.5 x 7.5 x 5 mm" in done.output and "correction: resampled" in done.output
    assert nib.load(str(out)).shape == (32, 32, 15)
    refused = runner.invoke(cli_app, ["convert", str(shared_data / FMRI_SERIES), "--out", str(out)])
    assert refused.exit_code != 0 and isinstance(refused.exception, BadInputError)
    windowed = runner.invoke(
        cli_app, ["convert", str(out), "--out", str(tmp_path / "w.nii"), "--window", "brain"]
    )
    assert windowed.exit_code == 0, windowed.output
    shown = read_nifti(tmp_path / "w.nii").array
    assert shown.min() >= 0.0 and shown.max() <= 1.0
    bad = runner.invoke(cli_app, ["convert", str(out), "--out", str(tmp_path / "x.nii"), "--spacing", "1,2"])
    assert bad.exit_code != 0 and "one or three positive numbers" in str(bad.exception)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """A 3D and a 2D model, heads trained on AdrenalMNIST3D in seconds."""
    from conftest import SHARED_DATA

    root = tmp_path_factory.mktemp("series-runs")
    return {dims: tiny_run(root / f"{dims}d", SHARED_DATA, dims) for dims in (3, 2)}


def test_predict_on_a_whole_stored_series(runs: dict[int, Path], store: Store, shared_data: Path) -> None:
    from medsight.ingest import Ingestor
    from medsight.predict.registration import register_run
    from medsight.serve import create_app

    register_run(store, runs[3], "adrenal3d", "1", default=True, user="test")
    register_run(store, runs[2], "adrenal2d", "1", user="test")
    add_user(store, "doc", Role.CLINICIAN, PASSWORD)
    headers = bearer(create_token(store, "doc"))
    report = Ingestor(store, workers=1).ingest_paths([shared_data / CT_SERIES], progress=False)
    stored = [o.sop_instance_uid for o in report.outcomes if o.sop_instance_uid]
    assert len(stored) == 28
    series = store.get_instance(stored[0]).series_uid
    client = TestClient(create_app(store))

    answer = client.post("/api/predict", data={"series": series}, headers=headers)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["classes"] == ["normal", "hyperplasia"] and abs(sum(body["probabilities"]) - 1) < 1e-5
    assert body["model"] == {"name": "adrenal3d", "version": "1"} and body["source_format"] == "dicom-series"
    assert body["sop_instance_uid"] in stored and body["sr_sop_instance_uid"]  # the SR joins the study
    assert body["study_instance_uid"] == store.get_instance(stored[0]).study_uid
    assert client.get(body["overlay_url"], headers=headers).status_code == 200

    as_json = client.post("/api/predict", json={"series": series}, headers=headers)
    assert as_json.status_code == 200 and as_json.json()["probabilities"] == body["probabilities"]

    missing = client.post("/api/predict", data={"series": "1.2.3.999"}, headers=headers)
    assert missing.status_code == 404 and "no series" in missing.json()["error"]
    flat = client.post("/api/predict", data={"series": series, "model": "adrenal2d"}, headers=headers)
    assert flat.status_code == 422 and "not a series" in flat.json()["error"]
    both = client.post("/api/predict", json={"series": series, "instance": stored[0]}, headers=headers)
    assert both.status_code == 422 and "exactly one" in both.json()["error"]
