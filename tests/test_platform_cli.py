"""The platform's CLI verbs, run as a user runs them: ingest, users, tokens, audit, flagged, export.

Ingest, audit, store check and export run on SQLite and PostgreSQL (``@both_backends``).
"""

from __future__ import annotations

import csv
import gzip
import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import both_backends
from PIL import Image
from pydicom.uid import UID
from test_deid import PLANTED, plant_phi, real_files

from medsight.errors import BadInputError
from medsight.store import add_user, authenticate, authenticate_token, open_store
from medsight.store.errors import AuthenticationError
from medsight.store.export import export_dataset

PASSWORD = "correct horse battery"
PHI_NAME = "Wilhelmina^Threepwood"


# `medsight` with every medsight log record (DEBUG and up) and other libraries' warnings on stderr
WITH_LOGS = (
    "import logging, sys; logging.basicConfig(format='%(levelname)s %(name)s: %(message)s'); "
    "logging.getLogger('medsight').setLevel(logging.DEBUG); from medsight.cli import main; main()"
)


def cli(*args: str | Path, stdin: str | None = None, logs: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "250"}
    return subprocess.run(
        [sys.executable, *(["-c", WITH_LOGS] if logs else ["-m", "medsight.cli"]), *map(str, args)],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture
def ct_patients(tmp_path: Path, shared_data: Path) -> Path:
    """6 patients x 2 CT slices, PHI planted in the names: enough for a patient-level split."""
    folder = tmp_path / "patients"
    folder.mkdir()
    slices = sorted((shared_data / "dicom" / "ct_head_ge").glob("*.dcm"))[:12]
    for k, path in enumerate(slices):
        ds = pydicom.dcmread(path)
        patient = k // 2
        ds.PatientID, ds.PatientName = f"PAT-{patient}", f"{PHI_NAME}{patient}"
        ds.StudyInstanceUID = f"1.2.826.0.1.3680043.10.999.{patient}.1"
        ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.10.999.{patient}.2"
        ds.save_as(folder / f"{k:02d}.dcm")
    return folder


def test_user_add_reads_the_password_from_stdin_only() -> None:
    refused = cli("user", "add", "alice", "--role", "admin")
    assert refused.returncode != 0 and "--password-stdin" in refused.stderr
    added = cli("user", "add", "alice", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    assert PASSWORD not in added.stdout + added.stderr
    listed = cli("user", "list")
    assert "alice" in listed.stdout and "admin" in listed.stdout
    with open_store() as store:
        assert authenticate(store, "alice", PASSWORD).name == "alice"
        with pytest.raises(AuthenticationError):
            authenticate(store, "alice", PASSWORD + "x")


def test_token_create_prints_the_token_alone_on_the_last_line_and_revoke_works() -> None:
    with open_store() as store:
        add_user(store, "rita", "researcher", PASSWORD)
    created = cli("token", "create", "rita", "--name", "laptop", "--days", "7")
    assert created.returncode == 0, created.stderr
    token = created.stdout.rstrip("\n").splitlines()[-1]
    assert re.fullmatch(r"ms_[A-Za-z0-9_-]{40,}", token)
    with open_store() as store:
        assert authenticate_token(store, token).name == "rita"
    listed = cli("token", "list")
    assert "laptop" in listed.stdout and "active" in listed.stdout and token not in listed.stdout
    assert cli("token", "revoke", "1").returncode == 0
    with open_store() as store, pytest.raises(AuthenticationError, match="revoked"):
        authenticate_token(store, token)


@both_backends
def test_ingest_prints_lines_and_summary_without_phi_and_audit_lists_it(
    ct_patients: Path, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    run = cli("ingest", ct_patients, tmp_path / "notes.txt")
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("stored ") == 12 and "refused   " in run.stdout and "not a DICOM" in run.stdout
    assert "12 stored, 0 duplicate, 1 refused" in run.stdout
    assert PHI_NAME.split("^")[0] not in run.stdout + run.stderr
    nothing = cli("ingest", tmp_path / "notes.txt")
    assert nothing.returncode == 1  # everything refused
    with open_store() as store:
        add_user(store, "alice", "admin", PASSWORD)
        authenticate(store, "alice", PASSWORD, client="127.0.0.1")
        with pytest.raises(AuthenticationError):
            authenticate(store, "alice", "wrong password!", client="127.0.0.1")
    audit = cli("audit")
    assert audit.returncode == 0, audit.stderr
    for action in ("ingest", "login", "login_failed", "write"):
        assert f" {action} " in audit.stdout, action
    only_ingest = cli("audit", "--action", "ingest", "--since", "1h")
    assert only_ingest.stdout.count(" ingest ") == 2 and " login " not in only_ingest.stdout
    assert cli("store", "check").returncode == 0


@both_backends
def test_flagged_pictures_stay_out_of_export_until_cleared_and_export_imports_back(
    ct_patients: Path, tmp_path: Path
) -> None:
    picture = tmp_path / "screen.png"
    Image.fromarray((np.arange(40 * 40) % 200).reshape(40, 40).astype(np.uint8)).save(picture)
    assert cli("ingest", ct_patients, picture).returncode == 0
    flagged = cli("flagged", "list")
    assert "burned_in_text_risk" in flagged.stdout and "1 flagged instance(s)" in flagged.stdout
    with open_store() as store:
        (sop_uid,) = [r.sop_uid for r in store.flagged_instances()]
        for k, study in enumerate(store.find_studies(modality="CT")):
            store.add_label("finding", "bleed" if k % 2 else "normal", "test", study_uid=study.study_uid)
    out = tmp_path / "export"
    exported = cli("export-dataset", "--out", out, "--format", "png")
    assert exported.returncode == 0, exported.stderr
    # the picture is flagged: every export leaves it out until an admin clears it
    assert "exported 12 instance(s)" in exported.stdout and "1 flagged" in exported.stdout
    with open(out / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12 and {r["label"] for r in rows} == {"bleed", "normal"}
    assert len({r["patient_id"] for r in rows}) == 6 and all(r["patient_id"].startswith("MS-") for r in rows)
    assert all((out / r["path"]).is_file() for r in rows)
    imported = cli("data", "import", out / "manifest.csv", "--name", "ct-export")
    assert imported.returncode == 0, imported.stderr
    assert "12 images" in imported.stdout
    with open_store() as store:
        add_user(store, "ada", "admin", PASSWORD)
    cleared = cli("flagged", "clear", sop_uid, "--admin", "ada")
    assert cleared.returncode == 0, cleared.stderr
    after = cli("export-dataset", "--out", tmp_path / "after", "--format", "nifti")
    assert "exported 13 instance(s)" in after.stdout, after.stderr
    audit = cli("audit").stdout
    assert " clear_flag " in audit and " export " in audit
    with open_store() as store, pytest.raises(BadInputError, match="not empty"):
        export_dataset(store, tmp_path / "after")  # never into a full folder


# -- planted PHI: none of it in what is exported, printed or logged ---------------------------------
EXTRA_PHI = {"SeriesDescription": "follow-up of Quixfeld", "ImageComments": "Marabel called on 5558675309"}
NOT_IDENTIFYING_UIDS = {"TransferSyntaxUID", "ImplementationClassUID"}  # the codec's, the writer's


def _instance_uids(ds: pydicom.Dataset) -> set[str]:
    """Every UID in ``ds`` (file meta, sequences, private tags) that names this object, not a standard."""
    found = set()
    for element in [*ds.file_meta.iterall(), *ds.iterall()]:
        if (
            element.VR != "UI"
            or element.keyword in NOT_IDENTIFYING_UIDS
            or element.keyword.endswith("ClassUID")
        ):
            continue
        for value in element.value if element.VM > 1 else [element.value]:
            uid = UID(str(value or ""))
            if uid and uid.name == str(uid):  # registered UIDs (standard SOP classes, codes) are no one's
                found.add(str(uid))
    return found


def _png_texts(data: bytes) -> list[bytes]:
    """The text of every tEXt, zTXt and iTXt chunk, decompressed."""
    texts, offset = [], 8
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        body = data[offset + 8 : offset + 8 + length]
        offset += 12 + length
        if kind == b"tEXt":
            texts.append(body)
        elif kind == b"zTXt":
            keyword, _, rest = body.partition(b"\0")
            texts.append(keyword + b" " + zlib.decompress(rest[1:]))
        elif kind == b"iTXt":
            keyword, _, rest = body.partition(b"\0")
            compressed, rest = rest[0], rest[2:]
            language, _, rest = rest.partition(b"\0")
            translated, _, text = rest.partition(b"\0")
            texts.append(
                b" ".join([keyword, language, translated, zlib.decompress(text) if compressed else text])
            )
    return texts


def _readable(path: Path) -> list[bytes]:
    """What a reader of ``path`` can see: its bytes, and decompressed or parsed forms of them."""
    data = path.read_bytes()
    views = [data]
    if data[:2] == b"\x1f\x8b":  # .nii.gz: header, extensions and voxels
        views.append(gzip.decompress(data))
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        views += _png_texts(data)
    if data[128:132] == b"DICM":  # every element, inside sequences and private blocks too
        ds = pydicom.dcmread(path)
        views.append(
            "\n".join(f"{e.tag} {e.value!s}" for e in [*ds.file_meta.iterall(), *ds.iterall()]).encode()
        )
    return views


@pytest.mark.parametrize("profile", ["basic", "research"])
def test_planted_phi_is_in_no_exported_byte_nor_in_what_ingest_and_export_print(
    profile: str, shared_data: Path, tmp_path: Path
) -> None:
    """PHI planted in real files (names, IDs, dates, descriptions, sequences, private tags, UIDs)
    is in no file of a DICOM, NIfTI or PNG export (manifest included), and not in the output or the
    logs of ingest, export and audit. Flagged instances are cleared first, so that all are exported."""
    sources = real_files(shared_data)
    folder = tmp_path / "phi"
    folder.mkdir()
    forbidden = set(PLANTED) | set(EXTRA_PHI.values())
    for k, path in enumerate(sources):
        ds = plant_phi(pydicom.dcmread(path))
        for keyword, value in EXTRA_PHI.items():
            setattr(ds, keyword, value)
        forbidden |= _instance_uids(ds)
        ds.save_as(folder / f"{k:02d}.dcm")
    assert len(forbidden) > len(PLANTED) + 20  # the originals' study, series, instance, frame... UIDs

    printed = {"ingest": cli("ingest", folder, "--profile", profile, logs=True)}
    assert printed["ingest"].stdout.count("stored ") == len(sources), printed["ingest"]
    with open_store() as store:
        add_user(store, "ada", "admin", PASSWORD)
        admin = authenticate(store, "ada", PASSWORD)
        flagged = store.flagged_instances()
        assert flagged  # ultrasound and secondary capture: burned-in text risk
        for record in flagged:
            store.clear_flag(record.sop_uid, admin)
    exports = {fmt: tmp_path / f"export-{fmt}" for fmt in ("dicom", "nifti", "png")}
    for fmt, out in exports.items():
        printed[fmt] = cli("export-dataset", "--out", out, "--format", fmt, logs=True)
        assert f"exported {len(sources)} instance(s)" in printed[fmt].stdout, printed[fmt]
    printed["audit"] = cli("audit", logs=True)

    files = [p for out in exports.values() for p in out.rglob("*") if p.is_file()]
    assert len(files) == 3 * (len(sources) + 1)  # the images and a manifest.csv per export
    for path in files:
        for view in _readable(path):
            leaked = sorted(value for value in forbidden if value.upper().encode() in view.upper())
            assert not leaked, f"{path.relative_to(tmp_path)}: {leaked}"
    for verb, run in printed.items():
        assert run.returncode == 0, run.stdout + run.stderr
        leaked = sorted(value for value in forbidden if value.upper() in (run.stdout + run.stderr).upper())
        assert not leaked, f"medsight {verb} printed or logged {leaked}"
