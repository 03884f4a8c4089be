"""Segmentation: DRIVE and manifest data sets, bad input, patches and loss, metrics, a tiny run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image

from medsight.data.segmentation import read_manifest
from medsight.data.segmentation_registry import (
    import_segmentation,
    load_segmentation_dataset,
    looks_like_segmentation,
    registry_dir,
)
from medsight.errors import BadInputError, ConfigError, DataNotFoundError
from medsight.evaluate.segmentation import choose_threshold, hd95, image_metrics, summarise
from medsight.train.config import TrainConfig

DRIVE_IDS = ("21", "22", "23", "24", "25", "26")
SHRINK = 4  # DRIVE's 565 × 584 photographs become 141 × 146: seconds to train on


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: on two busy cores a second OpenMP thread makes every step several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    """The real DRIVE set, found by name (read once per module: 40 photographs take seconds)."""
    from conftest import SHARED_DATA

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDSIGHT_DATA", str(SHARED_DATA))
        patch.setenv("MEDSIGHT_HOME", str(tmp_path_factory.mktemp("home")))
        return load_segmentation_dataset("drive")


# -- helpers ------------------------------------------------------------------------------------
def _drive_file(root: Path, kind: str, number: str) -> Path:
    name = {
        "images": f"{number}_training.tif",
        "1st_manual": f"{number}_manual1.gif",
        "mask": f"{number}_training_mask.gif",
    }
    return root / "seg" / "drive" / "training" / kind / name[kind]


def _small(path: Path, nearest: bool) -> Image.Image:
    with Image.open(path) as img:
        img = img.convert("RGB" if img.mode == "RGB" else "L")
        size = (img.width // SHRINK, img.height // SHRINK)
        return img.resize(size, Image.NEAREST if nearest else Image.BILINEAR)


@pytest.fixture
def small_drive(tmp_path: Path, shared_data: Path) -> Path:
    """A manifest of six real DRIVE training images, shrunk 4x, with masks and fields of view as PNG."""
    rows = []
    for k, number in enumerate(DRIVE_IDS):
        paths = {}
        for kind, column in (("images", "image"), ("1st_manual", "mask"), ("mask", "roi")):
            paths[column] = tmp_path / f"{number}_{column}.png"
            _small(_drive_file(shared_data, kind, number), nearest=kind != "images").save(paths[column])
        split = ["train", "train", "train", "val", "test", "test"][k]
        rows.append([paths["image"].name, paths["mask"].name, paths["roi"].name, f"p{number}", split])
    return write_manifest(tmp_path / "manifest.csv", ["image", "mask", "roi", "patient_id", "split"], rows)


def write_manifest(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read_rows(manifest: Path) -> list[list[str]]:
    with open(manifest, newline="") as handle:
        return list(csv.reader(handle))[1:]


def save_png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array.astype(np.uint8)).save(path)
    return path


# -- data ---------------------------------------------------------------------------------------
def test_drive_is_built_in_with_a_seeded_validation_carve(drive, shared_data):
    dataset = drive
    sizes = {name: len(split) for name, split in dataset.splits.items()}
    assert sizes == {"train": 16, "val": 4, "test": 20}
    train = dataset.splits["train"]
    assert train.images[0].shape == (3, 584, 565) and train.images[0].dtype == np.uint8
    assert train.masks[0].shape == (584, 565) and set(np.unique(train.masks[0])) == {0, 1}
    assert all(r is not None and r.shape == (584, 565) for r in train.rois)
    assert not set(dataset.splits["val"].names) & set(train.names)
    assert 0.08 < train.foreground_share() < 0.2  # vessels are ~12% of the field of view
    assert dataset.splits["val"].names == ["23_training", "25_training", "27_training", "40_training"], (
        "the carve is seeded: the same four images every time"
    )


def test_missing_drive_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSIGHT_DATA", str(tmp_path))
    with pytest.raises(DataNotFoundError, match=r"seg/drive.*grand-challenge"):
        load_segmentation_dataset("drive")
    with pytest.raises(DataNotFoundError, match="medsight data import PATH --task segmentation"):
        load_segmentation_dataset("nothing-here")


def test_manifest_import_registers_without_copying(small_drive):
    assert (
        looks_like_segmentation(small_drive)
        and looks_like_segmentation(small_drive.parents[0] / "nope") is False
    )
    report = import_segmentation(small_drive, name="tiny-drive")
    assert report.n_images == 6
    record = json.loads((registry_dir() / "tiny-drive" / "dataset.json").read_text())
    assert record["kind"] == "segmentation" and record["source"] == str(small_drive.resolve())
    assert sorted(p.name for p in (registry_dir() / "tiny-drive").iterdir()) == ["dataset.json"]
    dataset = load_segmentation_dataset("tiny-drive")
    assert [len(dataset.splits[s]) for s in ("train", "val", "test")] == [3, 1, 2]
    assert dataset.channels == 3 and dataset.spatial_dims == 2
    assert dataset.splits["test"].rois[0].shape == dataset.splits["test"].masks[0].shape == (146, 141)


def test_manifest_without_split_gets_a_patient_level_split(small_drive, tmp_path):
    rows = read_rows(small_drive)
    # two images of one patient must land in one split
    plain = [[r[0], r[1], r[2], "same" if k < 2 else r[3]] for k, r in enumerate(rows)]
    manifest = write_manifest(tmp_path / "nosplit.csv", ["image", "mask", "roi", "patient_id"], plain)
    dataset = read_manifest(manifest, "nosplit", seed=3)
    where = {n: s for s, part in dataset.splits.items() for n in part.names}
    assert where[f"{DRIVE_IDS[0]}_image"] == where[f"{DRIVE_IDS[1]}_image"]
    assert all(len(part) for part in dataset.splits.values())


@pytest.mark.parametrize(
    ("problem", "message"),
    [
        ("size", r"the mask is 10 × 10 but its image .* is 146 × 141"),
        ("empty", "the mask is empty"),
        ("grey", "not binary: it holds 3 values"),
        ("roi-size", r"the roi is 10 × 10"),
    ],
)
def test_bad_masks_are_refused_naming_the_file(small_drive, tmp_path, problem, message):
    rows = read_rows(small_drive)
    bad = tmp_path / "bad.png"
    if problem in ("size", "roi-size"):
        save_png(bad, np.full((10, 10), 255))
    elif problem == "empty":
        save_png(bad, np.zeros((146, 141)))
    else:
        values = np.zeros((146, 141))
        values[:50], values[50:60] = 255, 128  # an anti-aliased edge
        save_png(bad, values)
    column = 2 if problem == "roi-size" else 1
    rows[2][column] = bad.name
    manifest = write_manifest(tmp_path / "broken.csv", ["image", "mask", "roi", "patient_id", "split"], rows)
    with pytest.raises(BadInputError, match=message) as caught:
        import_segmentation(manifest, name="broken")
    assert "row 4" in str(caught.value) and "bad.png" in str(caught.value)
    assert not (registry_dir() / "broken").exists(), "nothing is registered when an input is refused"


def test_manifest_header_must_name_image_and_mask(tmp_path):
    manifest = write_manifest(tmp_path / "m.csv", ["path", "label"], [["a.png", "1"]])
    with pytest.raises(BadInputError, match="not a segmentation data set"):
        import_segmentation(manifest, name="m")
    with pytest.raises(BadInputError, match="no 'mask' column"):
        read_manifest(write_manifest(tmp_path / "n.csv", ["image", "roi"], [["a.png", "b.png"]]), "n")


def test_classification_options_are_refused_for_a_segmentation_import(small_drive):
    from typer.testing import CliRunner

    from medsight.cli import app

    result = CliRunner().invoke(app, ["data", "import", str(small_drive), "--size", "64", "--skip-bad"])
    assert result.exit_code != 0 and isinstance(
        result.exception, ConfigError
    )  # `medsight` prints it, exits non-zero
    assert "--size, --skip-bad: for classification data sets only" in str(result.exception)
    assert not (registry_dir() / "manifest").exists()  # nothing registered


# -- metrics ------------------------------------------------------------------------------------
def test_image_metrics_match_hand_counts():
    truth = np.zeros((10, 10), dtype=np.uint8)
    truth[2:6, 2:6] = 1  # 16 structure pixels
    probs = np.zeros((10, 10))
    probs[2:6, 2:4] = 0.9  # 8 found
    probs[8, 8] = 0.8  # 1 false positive
    probs[0, 0] = 0.7  # outside the ROI: must not count
    roi = np.ones((10, 10), dtype=np.uint8)
    roi[0, :] = 0  # 90 pixels inside
    m = image_metrics(probs, truth, roi, threshold=0.5)
    tp, fp, fn = 8, 1, 8
    tn = 90 - tp - fp - fn
    assert m["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert m["iou"] == pytest.approx(tp / (tp + fp + fn))
    assert m["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert m["specificity"] == pytest.approx(tn / (tn + fp))
    # AUC: 8 positives at 0.9 rank above all 74 negatives; 8 at 0 tie with the 73 zero negatives
    assert m["auc"] == pytest.approx((8 * 74 + 8 * 73 * 0.5) / (16 * 74))


def test_hd95_of_shifted_squares_and_empty_predictions():
    a = np.zeros((40, 40), dtype=bool)
    a[10:20, 10:20] = True
    b = np.roll(a, 3, axis=1)  # every edge pixel moves 3 pixels; no surface point is further
    assert hd95(a, b) == pytest.approx(3.0)
    assert hd95(a, a) == 0.0
    assert hd95(np.zeros_like(a), a) is None


def test_hd95_is_in_millimetres_along_each_axis_with_anisotropic_spacing():
    a = np.zeros((40, 40), dtype=bool)
    a[10:20, 10:20] = True
    spacing = (2.0, 0.5)  # mm per row, mm per column (array order, as medsight.io gives it)
    down, right = np.roll(a, 3, axis=0), np.roll(a, 4, axis=1)
    # by hand: a shift of 3 rows is 3 × 2.0 = 6 mm; a shift of 4 columns is 4 × 0.5 = 2 mm
    assert hd95(a, down, spacing) == pytest.approx(6.0) and hd95(a, down) == pytest.approx(3.0)
    assert hd95(a, right, spacing) == pytest.approx(2.0) and hd95(a, right) == pytest.approx(4.0)


def _nifti(path: Path, array: np.ndarray, zooms: tuple[float, float]) -> Path:
    """A 2D NIfTI file of ``array`` (rows, columns) with ``zooms`` (x = columns, y = rows) in mm."""
    import nibabel as nib

    image = nib.Nifti1Image(array.T.astype(np.float32), np.diag([*zooms, 1.0, 1.0]))
    nib.save(image, path)
    return path


def test_nifti_data_sets_measure_hd95_in_mm_and_png_ones_in_px(tmp_path):
    from medsight.evaluate.segmentation import evaluate_split, hd95_unit

    truth = np.zeros((24, 24), dtype=np.uint8)
    truth[6:14, 6:14] = 1
    rows = []
    for k in range(3):
        image = _nifti(tmp_path / f"{k}_image.nii.gz", truth * 100.0 + k, zooms=(0.5, 2.0))
        mask = _nifti(tmp_path / f"{k}_mask.nii.gz", truth, zooms=(0.5, 2.0))
        rows.append([image.name, mask.name, f"p{k}", ["train", "val", "test"][k]])
    header = ["image", "mask", "patient_id", "split"]
    dataset = read_manifest(write_manifest(tmp_path / "nifti.csv", header, rows), "nifti")
    assert dataset.splits["test"].spacings == [(2.0, 0.5)] and hd95_unit(dataset) == "mm"
    shifted = np.roll(truth, 2, axis=0).astype(np.float32)  # 2 rows of 2 mm
    test = evaluate_split([shifted], dataset.splits["test"], 0.5, n_boot=20, seed=0, unit="mm")
    assert test["hd95"] == pytest.approx(4.0) and test["per_image"][0]["hd95"] == pytest.approx(4.0)

    for k in range(3):  # the same pictures as PNG carry no spacing: pixels, said so
        save_png(tmp_path / f"{k}_image.png", truth * 100)
        save_png(tmp_path / f"{k}_mask.png", truth * 255)
        rows[k][:2] = [f"{k}_image.png", f"{k}_mask.png"]
    pictures = read_manifest(write_manifest(tmp_path / "png.csv", header, rows), "png")
    assert pictures.splits["test"].spacings == [None] and hd95_unit(pictures) == "px"


def test_threshold_is_chosen_for_mean_dice_and_cis_bracket_the_mean():
    from medsight.data.segmentation import SegmentationSplit

    truth = np.zeros((20, 20), dtype=np.uint8)
    truth[:, :10] = 1
    probs = np.where(truth > 0, 0.3, 0.1)  # the structure sits between 0.1 and 0.3
    split = SegmentationSplit([np.zeros((1, 20, 20))], [truth], [None], ["p"], ["a"])
    threshold = choose_threshold([probs], split)
    assert 0.1 < threshold <= 0.3
    rows = [
        {
            "name": str(k),
            **dict.fromkeys(("dice", "iou", "sensitivity", "specificity", "auc"), v),
            "hd95": None,
        }
        for k, v in enumerate([0.7, 0.8, 0.9, 0.75])
    ]
    summary = summarise(rows, n_boot=200, seed=0)
    assert summary["dice"] == pytest.approx(0.7875)
    lo, hi = summary["ci"]["dice"]
    assert lo <= summary["dice"] <= hi
    assert summary["hd95"] is None and summary["ci"]["hd95"] is None


# -- training pieces ----------------------------------------------------------------------------
def _tiny_config(**overrides) -> TrainConfig:
    values = {
        "dataset": "tiny-drive",
        "task": "segmentation",
        "task_options": {"patch_size": [32, 32], "patches_per_epoch": 16},
        "model_options": {"channels": [8, 16, 32]},
        "epochs": 1,
        "batch_size": 8,
        "bootstrap": 50,
    }
    return TrainConfig(**{**values, **overrides})


@pytest.fixture
def tiny_task(small_drive):
    from medsight.train.tasks.segmentation import Segmentation

    import_segmentation(small_drive, name="tiny-drive")
    dataset = Segmentation.load(_tiny_config())
    config, fingerprint = Segmentation.resolve(_tiny_config(), dataset)
    return Segmentation.build(config, dataset), config, fingerprint


def test_defaults_come_from_the_data(tiny_task, drive):
    from medsight.train.tasks.segmentation import Segmentation

    _, config, fingerprint = tiny_task
    assert config.model == "unet" and config.task_options["intensity"] == "image-zscore"
    assert fingerprint["has_roi"] and fingerprint["median_shape"] == [146, 141]
    resolved, _ = Segmentation.resolve(TrainConfig(dataset="drive"), drive)
    assert resolved.task_options["patch_size"] == [96, 96] and resolved.batch_size == 8
    with pytest.raises(ConfigError, match="is a classifier"):
        Segmentation.resolve(TrainConfig(dataset="drive", model="resnet18"), drive)
    with pytest.raises(ConfigError, match="unknown segmentation task option 'patchsize'"):
        Segmentation.resolve(TrainConfig(dataset="drive", task_options={"patchsize": 3}), drive)


def test_patches_are_reproducible_and_keep_the_roi(tiny_task):
    task, config, _ = tiny_task
    task.reseed(7)
    first = [task.train_set()[k] for k in range(6)]
    task.reseed(7)
    second = [task.train_set()[k] for k in range(6)]
    for (x1, y1), (x2, y2) in zip(first, second, strict=True):
        assert x1.shape == (3, 32, 32) and y1.shape == (2, 32, 32) and y1.dtype == torch.uint8
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert all(set(torch.unique(y).tolist()) <= {0, 1} for _, y in first)
    assert any(y[0].any() for _, y in first), "half the patches are centred on a vessel"


def test_loss_ignores_pixels_outside_the_roi(tiny_task):
    task, _, _ = tiny_task
    logits = torch.randn(2, 2, 16, 16)
    targets = torch.zeros(2, 2, 16, 16, dtype=torch.uint8)
    targets[:, 1, :, :8] = 1  # ROI: left half
    targets[:, 0, 4:8, 2:6] = 1
    changed = logits.clone()
    changed[..., 8:] = torch.randn(2, 2, 16, 8) * 10
    assert task.loss(logits, targets).item() == pytest.approx(task.loss(changed, targets).item(), rel=1e-5)


def test_validation_and_inference_info_of_an_untrained_model(tiny_task):
    task, _, _ = tiny_task
    torch.manual_seed(0)
    val_loss, dice = task.validate(task.build_model(), torch.device("cpu"))  # whole image, sliding window
    assert np.isfinite(val_loss) and 0.0 <= dice <= 1.0
    info = json.loads(json.dumps(task.inference_info()))
    assert info["task"] == "segmentation" and info["input"]["patch_size"] == [32, 32]
    assert task.batchnorm_inputs().shape == (64, 3, 32, 32)


# -- end to end ---------------------------------------------------------------------------------
def test_train_evaluate_and_segment_a_new_image(small_drive, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from medsight.cli import app
    from medsight.evaluate.run import evaluate_run
    from medsight.predict.segmentation import segment_file
    from medsight.train.engine import fit
    from medsight.train.segmentation_inference import load_segmenter

    result = CliRunner().invoke(app, ["data", "import", str(small_drive), "--name", "tiny-drive"])
    assert result.exit_code == 0, result.output
    assert "segmentation" in result.output and "foreground share" in result.output
    run = tmp_path / "run"
    config = _tiny_config(epochs=2, num_workers=0, num_threads=1, lr=1e-2)
    fit(
        config.model_copy(update={"task_options": {"patch_size": [32, 32], "patches_per_epoch": 64}}),
        run,
        log=print,
    )
    metrics = evaluate_run(run, log=lambda _: None)

    assert metrics["task"] == "segmentation" and 0.05 <= metrics["threshold"] <= 0.95
    on_disk = json.loads((run / "metrics.json").read_text())
    test = on_disk["test"]
    assert test["n"] == 2 and len(test["per_image"]) == 2
    for key in ("dice", "iou", "sensitivity", "specificity", "auc"):
        assert 0.0 <= test[key] <= 1.0, key
    assert test["auc"] > 0.55, "even 16 steps rank vessel pixels above background"
    assert json.loads((run / "run.json").read_text())["status"] == "complete"
    report = (run / "report.html").read_text()
    assert "Dice (F1)" in report and report.count("data:image/png;base64") >= 3  # curves + 2 overlays
    assert on_disk["hd95_unit"] == "px" and "HD95 (px)" in report  # PNGs carry no spacing
    assert (run / "plots" / "overlays" / f"{DRIVE_IDS[4]}_image.png").is_file()

    segmenter = load_segmenter(run)
    assert segmenter.threshold == metrics["threshold"] and segmenter.info["model"] == "unet"
    written = segment_file(
        run,
        small_drive.parent / f"{DRIVE_IDS[5]}_image.png",
        tmp_path / "out",
        roi_path=small_drive.parent / f"{DRIVE_IDS[5]}_roi.png",
    )
    with Image.open(written["mask"]) as mask, Image.open(written["overlay"]) as overlay:
        assert mask.size == overlay.size == (141, 146) and set(np.unique(np.asarray(mask))) <= {0, 255}

    # `medsight predict` on the run: a PNG and the same picture as a DICOM get masks (the DICOM also a
    # SEG in its study); a corrupt file is refused in its row without stopping the others
    png = small_drive.parent / f"{DRIVE_IDS[5]}_image.png"
    dicom = _rgb_dicom(png, tmp_path / "fundus.dcm")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "masks.csv"
    result = CliRunner().invoke(
        app, ["predict", str(run), str(png), str(dicom), str(tmp_path / "broken.png"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    rows = {Path(r["file"]).name: r for r in csv.DictReader(out.open())}
    assert [rows[n]["status"] for n in (png.name, "fundus.dcm", "broken.png")] == ["ok", "ok", "refused"]
    assert "broken.png" in rows["broken.png"]["error"] and "refused  " in result.output
    with Image.open(rows[png.name]["mask"]) as from_png, Image.open(rows["fundus.dcm"]["mask"]) as from_dicom:
        assert np.array_equal(np.asarray(from_png), np.asarray(from_dicom))  # same pixels, same mask
    assert rows[png.name]["seg"] == "" and float(rows[png.name]["foreground_share"]) > 0
    seg = pydicom.dcmread(rows["fundus.dcm"]["seg"])  # (highdicom's reader wants a slice thickness here)
    assert seg.Modality == "SEG" and seg.StudyInstanceUID == pydicom.dcmread(dicom).StudyInstanceUID
    assert int(seg.pixel_array.sum()) == int((np.asarray(Image.open(rows[png.name]["mask"])) > 0).sum())

    # a DICOM input is read once: the same dataset gives the pixels and is the SEG's source
    from medsight.data.segmentation import pixel_spacing, read_segmentation_image

    assert pixel_spacing(read_segmentation_image(dicom)) == (0.04, 0.04)
    reads, dcmread = [], pydicom.dcmread
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **k: reads.append(a[0]) or dcmread(*a, **k))
    again = segment_file(segmenter, dicom, tmp_path / "again")
    assert len(reads) == 1 and pydicom.dcmread(again["seg"]).Modality == "SEG"


def _rgb_dicom(png: Path, path: Path) -> Path:
    """The PNG as an RGB Secondary Capture DICOM file (a made-up patient)."""
    with Image.open(png) as picture:
        pixels = np.ascontiguousarray(np.asarray(picture.convert("RGB")))
    capture = hd.sc.SCImage(
        pixel_array=pixels,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        study_instance_uid=hd.UID(),
        series_instance_uid=hd.UID(),
        sop_instance_uid=hd.UID(),
        series_number=1,
        instance_number=1,
        manufacturer="test",
        patient_id="TEST-1",
        patient_orientation=("L", "P"),
        pixel_spacing=(0.04, 0.04),
    )
    capture.save_as(path)
    return path


def test_palette_masks_read_as_binary_and_dicom_seg_round_trips(shared_data):
    import io

    import highdicom as hd
    import pydicom
    from pydicom.data import get_testdata_file

    from medsight.data.segmentation import binary_mask, read_any_image
    from medsight.predict.segmentation import dicom_seg

    second = shared_data / "seg" / "drive" / "test" / "2nd_manual" / "01_manual2.gif"  # palette GIF
    mask = binary_mask(read_any_image(second), second)
    assert set(np.unique(mask)) == {0, 1} and 0.05 < mask.mean() < 0.2

    source = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    square = np.zeros((source.Rows, source.Columns), dtype=np.uint8)
    square[20:40, 20:40] = 1
    seg = dicom_seg(
        [source], square, {"model": "unet", "classes": ["background", "lesion"], "modality": "ct"}
    )
    buffer = io.BytesIO()
    seg.save_as(buffer)
    back = hd.seg.segread(io.BytesIO(buffer.getvalue()))
    assert back.Modality == "SEG" and back.StudyInstanceUID == source.StudyInstanceUID
    assert back.SegmentSequence[0].SegmentLabel == "lesion" and int(back.pixel_array.sum()) == 400
