"""Ingest: real DICOM of many transfer syntaxes, PNG, NIfTI and every kind of bad input, file by file.

Storing, duplicates and the kill -9 recovery run on SQLite and PostgreSQL (``@both_backends``).
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import SHARED_DATA, both_backends
from PIL import Image
from pydicom.data import get_testdata_file

from medsight.ingest import Ingestor, IngestReport
from medsight.store import Store, check_store, open_store

PHI_NAME = "Zebulon^Quixotic"
PHI_ID = "PHI-ID-987654"
# pydicom-data files and what they show: one per transfer syntax family
CODEC_FILES = {
    "CT_small.dcm": "explicit little endian",
    "MR_small_bigendian.dcm": "explicit big endian",
    "image_dfl.dcm": "deflated",
    "SC_rgb_jpeg_dcmtk.dcm": "JPEG baseline",
    "JPEG-LL.dcm": "JPEG lossless",
    "JPEGLSNearLossless_16.dcm": "JPEG-LS",
    "JPEG2000.dcm": "JPEG 2000",
    "JPGExtended.dcm": "JPEG Extended 12-bit",
    "SC_rgb_rle.dcm": "RLE",
}
MPEG2 = "1.2.840.10008.1.2.4.100"
# SHA-256 of JPGExtended.dcm's pixels (uint16 little endian) as DCMTK 3.6.7's dcmdjpeg decodes them
JPEG12_DCMTK_SHA256 = "d30242775a414c01d616447854ebe3f2b20259822894bcd6891f879bcdcbf313"


def pydicom_file(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    assert path, f"pydicom-data lacks {name}"
    return Path(path)


def by_name(report: IngestReport) -> dict[str, list]:
    found: dict[str, list] = {}
    for outcome in report.outcomes:
        found.setdefault(Path(outcome.name.split(":")[0]).name + outcome.name.partition(":")[2], []).append(
            outcome
        )
    return found


def _bomb_zip(path: Path, size: int) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive, archive.open("bomb.dcm", "w") as member:
        chunk = bytes(1 << 20)
        for _ in range(size >> 20):
            member.write(chunk)


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mixed")
    for name in CODEC_FILES:
        ds = pydicom.dcmread(pydicom_file(name))
        if name == "CT_small.dcm":  # PHI planted where a careless pipeline would keep it
            ds.PatientName, ds.PatientID = PHI_NAME, PHI_ID
            ds.StudyDescription = f"head CT of {PHI_NAME}"
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):  # the JPEG-LS sample lacks them
            if keyword not in ds:
                setattr(ds, keyword, pydicom.uid.generate_uid())
        ds.save_as(folder / name)
    Image.fromarray((np.arange(64 * 48) % 251).reshape(48, 64).astype(np.uint8)).save(folder / "photo.png")
    volume = np.arange(16 * 12 * 4, dtype=np.float32).reshape(16, 12, 4) - 100.5
    nib.save(nib.Nifti1Image(volume, np.diag([0.8, 0.9, 2.0, 1.0])), str(folder / "volume.nii.gz"))
    ct = (SHARED_DATA / "dicom" / "ct_head_ge" / "01.dcm").read_bytes()
    (folder / "truncated.dcm").write_bytes(ct[: len(ct) // 2])
    (folder / "notes.dcm").write_text("not an image at all\n" * 20)  # the name says DICOM, the content not
    (folder / "rtplan.dcm").write_bytes(pydicom_file("rtplan.dcm").read_bytes())
    mpeg = pydicom.dcmread(pydicom_file("SC_rgb_jpeg_dcmtk.dcm"))
    mpeg.file_meta.TransferSyntaxUID = MPEG2
    mpeg.SOPInstanceUID = pydicom.uid.generate_uid()
    mpeg.save_as(folder / "mpeg2.dcm")
    mr = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    mr.SOPInstanceUID = pydicom.uid.generate_uid()  # MR_small_bigendian shares MR_small's UID
    buffer = io.BytesIO()
    mr.save_as(buffer)
    with zipfile.ZipFile(folder / "slip.zip", "w") as archive:
        archive.writestr("../evil.dcm", buffer.getvalue())
        archive.writestr("inside/mr.dcm", buffer.getvalue())
    _bomb_zip(folder / "bomb.zip", 8 << 20)
    (folder / "huge.dcm").write_bytes(b"\0" * 128 + b"DICM" + os.urandom(3 << 20))
    return folder


@both_backends
def test_ct_series_is_stored_once_then_duplicates(store: Store, shared_data: Path) -> None:
    ingestor = Ingestor(store, batch_size=8)
    first = ingestor.ingest_paths([shared_data / "dicom" / "ct_head_ge"], progress=False)
    assert first.counts()["stored"] == 28, first.summary()
    (study,) = store.find_studies()
    assert study.instance_count == 28 and study.series_count == 1
    again = ingestor.ingest_paths([shared_data / "dicom" / "ct_head_ge"], progress=False)
    assert again.counts()["duplicate"] == 28 and again.counts()["stored"] == 0
    assert check_store(store).ok


@both_backends
def test_mixed_folder_gives_one_clear_outcome_per_file(store: Store, mixed_folder: Path) -> None:
    lines: list[str] = []
    ingestor = Ingestor(store, max_file_bytes=2 << 20)
    report = ingestor.ingest_paths(
        [mixed_folder], progress=False, on_outcome=lambda o: lines.append(o.line())
    )
    found = by_name(report)
    for name in CODEC_FILES:  # every transfer syntax decodes and is stored
        assert [o.status for o in found[name]] == ["stored"], (name, found[name])
    assert [o.status for o in found["photo.png"]] == ["stored"]
    assert "burned_in_text_risk" in found["photo.png"][0].flags  # a picture may show a name: flagged
    nifti = [o for o in report.outcomes if o.name.startswith(str(mixed_folder / "volume.nii.gz"))]
    assert len(nifti) == 4 and {o.status for o in nifti} == {"stored"}  # one SC instance per slice
    assert len({o.study_instance_uid for o in nifti}) == 1
    reasons = {name: outcomes[0].reason or "" for name, outcomes in found.items()}
    assert found["truncated.dcm"][0].status == "refused" and "does not decode" in reasons["truncated.dcm"]
    assert "not a DICOM, NIfTI, PNG or JPEG" in reasons["notes.dcm"]
    assert "without pixel data" in reasons["rtplan.dcm"]
    assert "undecodable transfer syntax" in reasons["mpeg2.dcm"] and MPEG2 in reasons["mpeg2.dcm"]
    assert "zip-slip" in reasons["slip.zip../evil.dcm"]
    assert found["slip.zipinside/mr.dcm"][0].status == "stored"
    assert "zip bomb" in reasons["bomb.zipbomb.dcm"]
    assert "larger than the limit" in reasons["huge.dcm"]
    assert not (mixed_folder.parent / "evil.dcm").exists()
    assert all(o.status == "refused" for n in ("truncated.dcm", "huge.dcm") for o in found[n])
    # PHI appears nowhere: not in what was stored, not in the reasons or lines printed
    for outcome in report.outcomes:
        if outcome.status == "stored":
            stored = store.get_instance_bytes(outcome.sop_instance_uid or "")
            assert b"Zebulon" not in stored and b"Quixotic" not in stored and PHI_ID.encode() not in stored
            assert pydicom.dcmread(io.BytesIO(stored)).PatientIdentityRemoved == "YES"
    assert not any("Zebulon" in line or PHI_ID in line for line in lines)
    assert check_store(store).ok
    again = Ingestor(store, max_file_bytes=2 << 20).ingest_paths([mixed_folder], progress=False)
    assert again.counts()["stored"] == 0  # derived UIDs: PNG and NIfTI are duplicates too
    assert again.counts()["duplicate"] == report.counts()["stored"]


def test_archive_over_total_limit_is_refused_whole(store: Store, tmp_path: Path) -> None:
    _bomb_zip(tmp_path / "big.zip", 2 << 20)
    report = Ingestor(store, max_archive_bytes=1 << 20).ingest_paths([tmp_path / "big.zip"], progress=False)
    (outcome,) = report.outcomes
    assert outcome.status == "refused" and "zip bomb" in (outcome.reason or "")


@both_backends
def test_bytes_and_datasets_doors(store: Store) -> None:
    """The doors STOW-RS and C-STORE use."""
    ingestor = Ingestor(store)
    data = pydicom_file("CT_small.dcm").read_bytes()
    report = ingestor.ingest_bytes([("part-1", data), ("part-2", b"garbage"), ("part-3", data)])
    assert [o.status for o in report.outcomes] == ["stored", "refused", "duplicate"]
    assert report.counts() == {"stored": 1, "duplicate": 1, "refused": 1, "flagged": 0}
    dataset = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    no_meta = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    del no_meta.file_meta
    report = ingestor.ingest_datasets([("c-store 1", dataset), ("c-store 2", no_meta)])
    assert report.outcomes[0].status == "stored"
    assert report.outcomes[1].status == "refused" and "Transfer Syntax" in (report.outcomes[1].reason or "")
    again = ingestor.ingest_datasets([("c-store 3", dataset)])
    assert "0 stored, 1 duplicate" in again.summary()


@both_backends
def test_kill_9_during_ingest_then_repair_and_rerun(db_url: str, shared_data: Path) -> None:
    """A real `medsight ingest` killed with SIGKILL after its first batch; check, repair, re-run: 28."""
    folder = shared_data / "dicom" / "ct_head_ge"
    command = [sys.executable, "-m", "medsight.cli", "ingest", str(folder), "--batch-size", "2"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("stored"):
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    with open_store(db_url) as opened:
        assert 0 < sum(s.instance_count for s in opened.find_studies()) < 28
        repaired = check_store(opened, repair=True)
        assert repaired.ok and not repaired.missing and not repaired.corrupt
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    with open_store(db_url) as opened:
        assert sum(s.instance_count for s in opened.find_studies()) == 28
        assert check_store(opened).ok


def test_12_bit_jpeg_extended_is_stored_and_decodes_as_dcmtk_does(store: Store, tmp_path: Path) -> None:
    """Lossy 12-bit JPEG (1.2.840.10008.1.2.4.51) goes through GDCM: same pixels as DCMTK's decoder."""
    from medsight.io import read_image

    report = Ingestor(store).ingest_paths([pydicom_file("JPGExtended.dcm")], progress=False)
    (outcome,) = report.outcomes
    assert outcome.status == "stored", outcome.reason
    stored = store.get_instance_bytes(outcome.sop_instance_uid or "")
    ds = pydicom.dcmread(io.BytesIO(stored))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.51"  # stored as it came: still lossy JPEG
    pixels = ds.pixel_array
    assert (pixels.shape, pixels.dtype, int(pixels.max()) <= 4095) == ((1024, 256), np.uint16, True)
    assert (pixels[420, 140], pixels[230, 120]) == (244, 95)  # pydicom's reference values for this file
    assert hashlib.sha256(pixels.astype("<u2").tobytes()).hexdigest() == JPEG12_DCMTK_SHA256
    (tmp_path / "stored.dcm").write_bytes(stored)
    assert read_image(tmp_path / "stored.dcm").array.shape == (1, 1024, 256)  # training reads it too


def _summary(report: IngestReport) -> list[tuple]:
    return [
        (o.name, o.status, o.reason, o.sop_instance_uid, o.study_instance_uid, o.flags)
        for o in report.outcomes
    ]


def test_worker_processes_give_the_same_outcomes_and_files(mixed_folder: Path, shared_data: Path) -> None:
    """The parallel path (forced here for a small input) stores the same bytes with the same outcomes."""
    paths = [mixed_folder, shared_data / "dicom" / "ct_head_ge" / "01.dcm"]
    results = []
    for workers in (1, 2):
        with open_store(f"sqlite:///{mixed_folder.parent}/w{workers}-{os.getpid()}.db") as store:
            ingestor = Ingestor(store, max_file_bytes=2 << 20, workers=workers, parallel_min_files=1)
            report = ingestor.ingest_paths(paths, progress=False)
            shas = sorted(r.sha for r in store.iter_instances(include_excluded=True))
            results.append((_summary(report), shas))
    assert results[0] == results[1]
    statuses = {status for _, status, *_ in results[0][0]}
    assert statuses == {"stored", "refused"}
    by_bytes = [(f"part{k}", p.read_bytes()) for k, p in enumerate(sorted(mixed_folder.glob("*.dcm")))]
    with open_store(f"sqlite:///{mixed_folder.parent}/b-{os.getpid()}.db") as store:
        one = Ingestor(store, max_file_bytes=2 << 20, workers=1).ingest_bytes(by_bytes)
    with open_store(f"sqlite:///{mixed_folder.parent}/b2-{os.getpid()}.db") as store:
        two = Ingestor(store, max_file_bytes=2 << 20, workers=2, parallel_min_files=1).ingest_bytes(by_bytes)
    assert _summary(one) == _summary(two)
