"""Tests of medsight.data: the registry, MedMNIST files, imports (npz, folder, CSV, DICOM) and splits."""

from __future__ import annotations

import csv
import functools
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medsight.data.importer import import_dataset
from medsight.data.registry import list_datasets, load_dataset, registry_dir
from medsight.data.splits import patient_split
from medsight.errors import BadInputError, DataNotFoundError

N_PER_CLASS = 30  # 60 PNGs for folder and CSV imports


# -- helpers ------------------------------------------------------------------------------------
@functools.cache
def _first_train_images(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as npz:
        images, labels = npz["train_images"], npz["train_labels"].ravel()
    pick = np.concatenate([np.flatnonzero(labels == c)[:N_PER_CLASS] for c in (0, 1)])
    return images[pick], labels[pick]


@pytest.fixture
def pneumonia_train(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    """The first N_PER_CLASS train images of each class of PneumoniaMNIST (images (N, 28, 28) uint8)."""
    return _first_train_images(shared_data / "medmnist" / "pneumoniamnist.npz")


def write_pngs(folder: Path, images: np.ndarray, labels: np.ndarray) -> list[tuple[Path, str]]:
    """One PNG per image in folder/<class>/; returns (path, class name) in image order."""
    names = ["normal", "pneumonia"]
    written = []
    for k, (image, label) in enumerate(zip(images, labels, strict=True)):
        path = folder / names[label] / f"img{k:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
        written.append((path, names[label]))
    return written


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under folder with its size and mtime (ns): to prove an import left it alone."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


def registered() -> list[str]:
    folder = registry_dir()
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def split_of_each(dataset) -> dict[str, np.ndarray]:
    return {name: split.patient_ids for name, split in dataset.splits.items()}


# -- registry and MedMNIST files ----------------------------------------------------------------
def test_data_list_shows_pneumoniamnist_available(shared_data, run_cli):
    entries = {e.name: e for e in list_datasets()}
    assert entries["pneumoniamnist"].available
    assert entries["pneumoniamnist"].location == shared_data / "medmnist" / "pneumoniamnist.npz"
    assert not entries["bloodmnist"].available

    result = run_cli("data", "list")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[1]: line for line in result.stdout.splitlines() if line.count("│") >= 4}
    assert "yes" in rows["pneumoniamnist"].split("│")[3]
    assert "no" in rows["bloodmnist"].split("│")[3]
    assert "synthetic" in rows


def test_load_pneumoniamnist_official_sizes(shared_data):
    dataset = load_dataset("pneumoniamnist")
    assert dataset.classes == ["normal", "pneumonia"]
    assert dataset.spatial_dims == 2 and dataset.modality == "xray"
    expected = {"train": (4708, [1214, 3494]), "val": (524, [135, 389]), "test": (624, [234, 390])}
    for name, (size, counts) in expected.items():
        split = dataset.splits[name]
        assert len(split) == size
        assert split.images.shape == (size, 1, 28, 28)
        assert split.images.dtype == np.uint8
        assert split.label_counts(2) == counts
    info = dataset.info()
    assert info["image_shape"] == [28, 28] and info["channels"] == 1
    assert info["splits"]["test"] == {"size": 624, "label_counts": [234, 390]}


def test_data_info_prints_one_layout_for_classification_and_segmentation(shared_data):
    from typer.testing import CliRunner

    from medsight.cli import app

    runner = CliRunner()
    pneumonia = runner.invoke(app, ["data", "info", "pneumoniamnist"])
    drive = runner.invoke(app, ["data", "info", "drive"])
    assert pneumonia.exit_code == 0 and drive.exit_code == 0, pneumonia.output + drive.output
    assert pneumonia.output.startswith("pneumoniamnist  (xray, 2D, shape [28, 28], 1 channel(s))\nsource: ")
    assert drive.output.startswith(
        "drive  (segmentation, fundus, 2D, median shape [584, 565], 3 channel(s))\nsource: "
    )
    pneumonia_rows = [line.split() for line in pneumonia.output.splitlines() if "│" in line]
    drive_rows = [line.split() for line in drive.output.splitlines() if "│" in line]
    assert ["│", "test", "│", "624", "│", "234", "│", "390", "│"] in pneumonia_rows
    assert ["│", "test", "│", "20", "│", "0.1273", "│"] in drive_rows  # the foreground share, 4 places
    for output in (pneumonia.output, drive.output):
        assert output.splitlines()[-1].startswith("licence: ") and "; cite " in output


def test_load_adrenalmnist3d_is_3d(shared_data):
    dataset = load_dataset("adrenalmnist3d")
    assert dataset.spatial_dims == 3
    assert dataset.image_shape == (28, 28, 28)
    assert {n: len(s) for n, s in dataset.splits.items()} == {"train": 1188, "val": 98, "test": 298}
    assert dataset.splits["train"].images.shape[1:] == (1, 28, 28, 28)
    assert dataset.splits["test"].label_counts(2) == [229, 69]


def test_unknown_name_lists_known_names():
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("no-such-set")
    message = str(err.value)
    assert "no-such-set" in message
    for known in ("pneumoniamnist", "adrenalmnist3d", "synthetic"):
        assert known in message


def test_medmnist_file_absent_says_where_and_how(shared_data):
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("bloodmnist")
    message = str(err.value)
    assert str(shared_data / "medmnist" / "bloodmnist.npz") in message
    assert "downloads" in message
    assert "medsight data pull bloodmnist" in message


# -- npz import -----------------------------------------------------------------------------------
def test_corrupt_npz_is_refused_and_nothing_registered(tmp_path):
    bad = tmp_path / "x.npz"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(BadInputError) as err:
        import_dataset(bad, registry_dir(), name="x")
    assert str(bad) in str(err.value)
    assert registered() == []
    with pytest.raises(DataNotFoundError):
        load_dataset("x")


def test_npz_import_by_cli_then_info(tmp_path, run_cli):
    rng = np.random.default_rng(1)
    arrays = {}
    for split, n in {"train": 40, "val": 10, "test": 12}.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 16, 16), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 3)[:, None]
    source = tmp_path / "My Scans.npz"
    np.savez(source, **arrays)

    imported = run_cli("data", "import", source, "--classes", "a,b,c")
    assert imported.returncode == 0, imported.stderr
    assert "imported 'my-scans'" in imported.stdout

    info = run_cli("data", "info", "my-scans", "--json")
    assert info.returncode == 0, info.stderr
    facts = json.loads(info.stdout)
    assert facts["classes"] == ["a", "b", "c"]
    assert facts["image_shape"] == [16, 16]
    assert facts["splits"]["train"] == {"size": 40, "label_counts": [14, 13, 13]}
    entry = next(e for e in list_datasets() if e.name == "my-scans")
    assert entry.kind == "imported npz" and entry.location == source and entry.available


# -- folder and CSV imports -------------------------------------------------------------------------
def test_folder_import_covers_every_image_stratified(tmp_path, pneumonia_train):
    images, labels = pneumonia_train
    source = tmp_path / "xrays"
    write_pngs(source, images, labels)
    before = snapshot(source)

    report = import_dataset(source, registry_dir(), name="xrays")
    assert report.n_images == 2 * N_PER_CLASS and report.skipped == []
    assert snapshot(source) == before

    dataset = load_dataset("xrays")
    assert dataset.classes == ["normal", "pneumonia"]
    assert dataset.image_shape == (28, 28) and dataset.channels == 1
    sizes = {name: len(split) for name, split in dataset.splits.items()}
    assert sum(sizes.values()) == 2 * N_PER_CLASS
    assert 8 <= sizes["test"] <= 16 and 3 <= sizes["val"] <= 10
    for split in dataset.splits.values():  # stratified: both classes in every split, near 50/50
        counts = split.label_counts(2)
        assert min(counts) >= 1 and abs(counts[0] - counts[1]) <= max(2, len(split) // 4)
    # every source image is in exactly one split, pixel values kept
    stored = np.concatenate([s.images[:, 0] for s in dataset.splits.values()])
    assert sorted(stored.sum(axis=(1, 2)).round().astype(int)) == sorted(images.sum(axis=(1, 2)).astype(int))


def test_csv_import_keeps_each_patient_in_one_split(tmp_path, pneumonia_train):
    images, labels = pneumonia_train
    source = tmp_path / "scans"
    written = write_pngs(source, images, labels)
    # 3 images per patient, a patient's images share a label (classes are in blocks of N_PER_CLASS)
    rows = [
        [path.relative_to(tmp_path), label, f"PAT{k // 3:03d}"] for k, (path, label) in enumerate(written)
    ]
    manifest = write_csv(tmp_path / "labels.csv", ["path", "label", "patient_id"], rows)
    before = snapshot(tmp_path)

    import_dataset(manifest, registry_dir(), name="by-patient", seed=3)
    assert snapshot(tmp_path) == before

    dataset = load_dataset("by-patient")
    where: dict[int, set[str]] = {}
    for name, ids in split_of_each(dataset).items():
        assert len(ids) > 0
        for patient in ids:
            where.setdefault(int(patient), set()).add(name)
    assert len(where) == 2 * N_PER_CLASS // 3
    assert all(len(splits) == 1 for splits in where.values()), where


def test_csv_missing_file_names_the_row_and_registers_nothing(tmp_path, pneumonia_train):
    images, labels = pneumonia_train
    written = write_pngs(tmp_path / "scans", images[::5], labels[::5])
    rows = [[path, label] for path, label in written]
    rows[4][0] = tmp_path / "scans" / "gone.png"  # CSV line 6 (the header is line 1)
    manifest = write_csv(tmp_path / "labels.csv", ["path", "label"], rows)
    with pytest.raises(BadInputError) as err:
        import_dataset(manifest, registry_dir(), name="broken")
    assert "row 6" in str(err.value) and "gone.png" in str(err.value)
    assert "--skip-bad" in str(err.value)
    assert registered() == []


def test_csv_unknown_label_with_classes_names_the_row(tmp_path, pneumonia_train):
    images, labels = pneumonia_train
    written = write_pngs(tmp_path / "scans", images[::5], labels[::5])
    rows = [[path, label] for path, label in written]
    rows[7][1] = "covid"  # CSV line 9
    manifest = write_csv(tmp_path / "labels.csv", ["path", "label"], rows)
    with pytest.raises(BadInputError) as err:
        import_dataset(manifest, registry_dir(), name="labels", classes=["normal", "pneumonia"])
    assert "row 9" in str(err.value) and "covid" in str(err.value)
    assert registered() == []


def test_csv_split_column_with_patient_in_two_splits_is_refused(tmp_path, pneumonia_train):
    images, labels = pneumonia_train
    written = write_pngs(tmp_path / "scans", images[::5], labels[::5])
    splits = ["train"] * 6 + ["val"] * 2 + ["test"] * 4
    patients = [f"P{k // 2}" for k in range(12)]  # two images each
    patients[9] = "P0"  # P0 is in train (CSV lines 2, 3) and in test (CSV line 11)
    rows = [[p, lab, pid, s] for (p, lab), pid, s in zip(written, patients, splits, strict=True)]
    manifest = write_csv(tmp_path / "labels.csv", ["path", "label", "patient_id", "split"], rows)
    with pytest.raises(BadInputError) as err:
        import_dataset(manifest, registry_dir(), name="leaky")
    message = str(err.value)
    assert "same patient" in message and "'train'" in message and "'test'" in message
    assert "rows 2 and 11" in message  # CSV line numbers, like every other row message
    assert "P0" not in message  # patient ids are not echoed
    assert registered() == []


def test_skip_bad_imports_the_rest_and_reports(tmp_path, pneumonia_train, run_cli):
    images, labels = pneumonia_train
    written = write_pngs(tmp_path / "scans", images, labels)
    rows = [[path, label] for path, label in written]
    not_png = tmp_path / "scans" / "notes.png"
    not_png.write_text("this is a radiology report, not an image\n")
    rows[2][0] = not_png  # CSV line 4
    rows[40][0] = tmp_path / "scans" / "missing.png"  # CSV line 42
    manifest = write_csv(tmp_path / "labels.csv", ["path", "label"], rows)

    report = import_dataset(manifest, registry_dir(), name="partial", skip_bad=True)
    assert report.n_images == len(rows) - 2
    assert len(report.skipped) == 2
    assert report.skipped[0].startswith("row 4:") and "notes.png" in report.skipped[0]
    assert report.skipped[1].startswith("row 42:") and "missing.png" in report.skipped[1]
    assert sum(len(s) for s in load_dataset("partial").splits.values()) == len(rows) - 2


def test_csv_import_of_dicom_finds_ct_modality(tmp_path, shared_data):
    ct = shared_data / "dicom" / "ct_head_ge"
    picked = [ct / f"{k:02d}.dcm" for k in range(8, 14)]
    splits = ["train", "train", "val", "val", "test", "test"]
    rows = [[path, "upper" if k % 2 else "lower", splits[k]] for k, path in enumerate(picked)]
    manifest = write_csv(tmp_path / "ct.csv", ["path", "label", "split"], rows)
    before = snapshot(ct)

    report = import_dataset(manifest, registry_dir(), name="ct-head", size=32)
    assert report.n_images == 6
    assert snapshot(ct) == before

    dataset = load_dataset("ct-head")
    assert dataset.modality == "ct"
    assert dataset.classes == ["lower", "upper"]
    assert dataset.image_shape == (32, 32)
    assert {n: len(s) for n, s in dataset.splits.items()} == {"train": 2, "val": 2, "test": 2}
    assert dataset.splits["train"].images.min() < 0  # Hounsfield units kept (air is negative)


# -- patient_split ------------------------------------------------------------------------------------
def test_patient_split_fractions_and_stratification():
    rng = np.random.default_rng(0)
    labels = (rng.random(1000) < 0.3).astype(int)
    splits = patient_split(labels, None, seed=0)
    assert set(splits) == {"train", "val", "test"}
    share = {name: np.mean(splits == name) for name in ("train", "val", "test")}
    assert share["test"] == pytest.approx(0.2, abs=0.02)
    assert share["val"] == pytest.approx(0.1, abs=0.02)
    for name in share:
        assert labels[splits == name].mean() == pytest.approx(labels.mean(), abs=0.04)


def test_patient_split_has_no_patient_leak():
    rng = np.random.default_rng(1)
    patients = np.repeat(np.arange(100), rng.integers(1, 6, 100))
    labels = (patients % 3 == 0).astype(int)
    splits = patient_split(labels, patients, seed=5)
    for patient in np.unique(patients):
        assert len(set(splits[patients == patient])) == 1
    assert np.mean(splits == "test") == pytest.approx(0.2, abs=0.06)


def test_patient_split_is_deterministic_by_seed():
    labels = np.arange(200) % 2
    patients = np.arange(200) // 2
    first = patient_split(labels, patients, seed=7)
    assert np.array_equal(first, patient_split(labels, patients, seed=7))
    assert not np.array_equal(first, patient_split(labels, patients, seed=8))


def test_patient_split_refuses_too_few():
    with pytest.raises(BadInputError, match="at least 10"):
        patient_split(np.array([0, 1] * 4), None)
    with pytest.raises(BadInputError, match="fewer than 3 patients"):
        patient_split(np.array([0, 1] * 10), np.array([0, 1] * 10))


def test_remove_leaves_source_alone(tmp_path, pneumonia_train):
    images, labels = pneumonia_train
    source = tmp_path / "xrays"
    write_pngs(source, images[::3], labels[::3])
    import_dataset(source, registry_dir(), name="to-remove")
    before = snapshot(source)
    from medsight.data.registry import remove_dataset

    remove_dataset("to-remove")
    assert registered() == [] and snapshot(source) == before
