"""``medsight predict`` with a 3D model on folders of DICOM series: each series one volume, read as the API
reads a stored series; a 3D segmentation model's mask as one multi-frame SEG over the folder's own slices;
a series with a slice missing and a damaged slice refused in rows of their own."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from series_helpers import CT_SERIES, bone_segmentation_run, read_folder, tiny_run
from test_series_segmentation import _at_pixels, _model_on_grid
from typer.testing import CliRunner

from medsight.cli import app as cli_app
from medsight.io.series import read_series
from medsight.predict import Predictor, load_model
from medsight.predict.series import along_normal


def _predict(*args: str | Path) -> tuple[int, str]:
    """``medsight predict ARGS`` in this process (a subprocess would pay torch's import again): exit code,
    output."""
    done = CliRunner().invoke(cli_app, ["predict", *map(str, args)])
    return done.exit_code, done.output


def _rows(out: Path) -> list[dict[str, str]]:
    with out.open() as handle:
        return list(csv.DictReader(handle))


def _holed_folder(source: Path, where: Path) -> Path:
    """The evenly spaced first 13 slices (4 mm) without the 6th (an 8 mm gap), and a truncated copy of
    the 7th, whose pixels cannot be decoded."""
    files = sorted(source.glob("*.dcm"), key=lambda p: along_normal(pydicom.dcmread(p)))
    where.mkdir()
    for path in files[:5] + files[6:13]:
        (where / path.name).symlink_to(path)
    (where / "damaged.dcm").write_bytes(files[6].read_bytes()[:-200_000])
    return where


def test_a_3d_classifier_predicts_on_each_series_folder_as_one_volume(
    shared_data: Path, tmp_path: Path
) -> None:
    run = tiny_run(tmp_path / "adrenal3d", shared_data, 3)
    ct, holed = shared_data / CT_SERIES, _holed_folder(shared_data / CT_SERIES, tmp_path / "holed")
    out, maps = tmp_path / "results.csv", tmp_path / "maps"
    code, output = _predict(run, ct, holed, "--out", out, "--explain-dir", maps)
    assert code == 0, output
    rows = {(Path(r["file"]).name, r["series"] != ""): r for r in _rows(out)}
    assert len(rows) == 3  # the CT series, the holed series, the damaged slice

    series = rows[(ct.name, True)]
    assert series["status"] == "ok" and series["slices"] == "28"
    assert series["series"] == str(read_folder(ct)[0].SeriesInstanceUID)
    expected = Predictor().predict_volume(read_series(ct), load_model(run, "adrenal3d", "run"))
    assert series["label"] == expected.label
    assert np.allclose(json.loads(series["probabilities"]), expected.probabilities, atol=1e-5)
    assert sorted(p.name for p in maps.glob("series000-*")) == [
        f"series000-{ct.name}.heatmap.png",
        f"series000-{ct.name}.overlay.png",
    ]

    gap, damaged = rows[("holed", True)], rows[("damaged.dcm", False)]
    assert gap["status"] == "refused" and "gap of 8.00 mm" in gap["error"] and "--allow-gaps" in gap["error"]
    assert damaged["status"] == "refused" and "cannot decode this DICOM" in damaged["error"]
    assert f"refused  {holed}:" in output and "3 input(s): 1 predicted, 2 refused" in output

    code, _ = _predict(run, holed, "--out", tmp_path / "refused.csv")
    assert code == 1 and {r["status"] for r in _rows(tmp_path / "refused.csv")} == {"refused"}


@pytest.fixture(scope="module")
def bone_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bone_segmentation_run(tmp_path_factory)


def test_a_3d_segmentation_model_writes_one_multiframe_seg_over_the_folders_slices(
    bone_run: Path, shared_data: Path, tmp_path: Path
) -> None:
    ct = shared_data / CT_SERIES
    out = tmp_path / "masks.csv"
    code, output = _predict(bone_run, ct, "--out", out)
    assert code == 0, output
    (row,) = _rows(out)
    assert row["status"] == "ok" and row["slices"] == "28" and row["mask"] == row["probs"] == ""
    assert Path(row["overlay"]).parent == tmp_path / "masks_masks" and Path(row["overlay"]).is_file()

    # the API's mask, computed independently here: the model on the series at 3 mm, looked up at every
    # acquired pixel's patient position
    slices = sorted(read_folder(ct), key=along_normal)
    probabilities, grid, threshold = _model_on_grid(bone_run, slices)
    expected = _at_pixels(probabilities, grid, threshold, slices)
    assert int(row["foreground_voxels"]) == pytest.approx(int(expected.sum()), rel=1e-3)
    assert float(row["volume_ml"]) > 0

    segmentation = hd.seg.Segmentation.from_dataset(pydicom.dcmread(row["seg"]))
    with_bone = [d for d, m in zip(slices, expected, strict=True) if m.any()]
    referenced = {
        str(frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        for frame in segmentation.PerFrameFunctionalGroupsSequence
    }
    assert referenced == {str(d.SOPInstanceUID) for d in with_bone}  # the folder's own instances
    assert segmentation.StudyInstanceUID == slices[0].StudyInstanceUID
    read_back = segmentation.get_pixels_by_source_instance(
        [str(d.SOPInstanceUID) for d in slices], segment_numbers=[1], assert_missing_frames_are_empty=True
    )[..., 0]
    assert int(read_back.sum()) == int(row["foreground_voxels"])
    assert np.mean(read_back.astype(bool) == expected) > 0.9999  # only float rounding at the threshold
