"""``medsight predict RUN record.zip`` on an ECG beat model: a zip of one WFDB record is read as
``POST /api/predict`` reads one (in memory, parts told apart by content, never extracted under its
members' names) and gives the beats its files give; a bad zip is a refused row, the others predicted."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import pytest
from predict_helpers import tiny_ecg_run
from typer.testing import CliRunner

from medsight.cli import app as cli_app

BEAT = ("beat", "time_s", "p_pvc", "label", "reference", "beats_from")


def _zip(path: Path, members: list[tuple[str, bytes]]) -> Path:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    path.write_bytes(buffer.getvalue())
    return path


def test_a_zipped_record_gives_the_beats_of_its_files(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, shared_data: Path
) -> None:
    run_dir = tiny_ecg_run(tmp_path_factory)
    record = shared_data / "ecg" / "wfdb" / "100"
    files = {s: record.with_suffix(s).read_bytes() for s in (".hea", ".dat", ".atr")}
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    members = [
        ("../../up/100.hea", files[".hea"]),
        ("100/100.dat", files[".dat"]),
        ("100.atr", files[".atr"]),
    ]
    good = _zip(inputs / "100.zip", [*members, ("__MACOSX/._100.hea", b"\x00\x05\x16\x07junk")])
    damaged = inputs / "damaged.zip"
    damaged.write_bytes(good.read_bytes()[:-30])
    no_record = _zip(inputs / "notes.zip", [("README.txt", b"MIT-BIH record 100\n")])
    not_zip = inputs / "fake.zip"
    not_zip.write_bytes(b"not a zip at all")
    out = tmp_path / "beats.csv"

    args = [str(record.with_suffix(".hea")), str(good), str(damaged), str(no_record), str(not_zip)]
    done = CliRunner().invoke(cli_app, ["predict", str(run_dir), *args, "--out", str(out)])
    assert done.exit_code == 0, done.output
    rows = list(csv.DictReader(out.open()))
    by_file: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_file.setdefault(Path(row["file"]).name, []).append(row)

    from_files, from_zip = by_file["100"], by_file["100.zip"]
    assert len(from_zip) > 2000 and all(r["status"] == "ok" for r in from_zip)
    assert [[r[k] for k in BEAT] for r in from_zip] == [[r[k] for k in BEAT] for r in from_files]
    assert from_zip[0]["beats_from"] == "annotations"
    refused = {name: by_file[name] for name in ("damaged.zip", "notes.zip", "fake.zip")}
    assert all(len(r) == 1 and r[0]["status"] == "refused" for r in refused.values())
    assert "the zip archive is damaged" in refused["damaged.zip"][0]["error"]
    assert "no WFDB header" in refused["notes.zip"][0]["error"]
    assert "fake.zip: not a zip archive" in refused["fake.zip"][0]["error"]
    assert "medsight-ecg-" not in out.read_text()  # no refusal names our temporary folder
    assert not (tmp_path / "up").exists() and sorted(p.name for p in inputs.iterdir()) == [
        "100.zip",
        "damaged.zip",
        "fake.zip",
        "notes.zip",
    ]  # nothing extracted, under the members' names or any other
