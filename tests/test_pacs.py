"""medsight against a real PACS: Orthanc (Debian package) started on loopback ports by the test itself.

The CT series goes into Orthanc through its REST API with planted PHI; medsight pulls it by C-GET,
C-MOVE and DICOMweb (each instance de-identified on the way in) and pushes a stored study back.
Pulling into the store by C-GET and pushing out of it run on SQLite and PostgreSQL (``@both_backends``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from conftest import both_backends
from orthanc import Orthanc, free_port, run_orthanc

from medsight.ingest import Ingestor
from medsight.ingest.pacs import PacsError, PacsNode, StudyQuery, pull, push
from medsight.store import Store, audit, check_store

PHI_NAME = "Zebulon^Quixotic"
PHI_ID = "PHI-ID-987654"
ACCESSION = "ACC-PHI-4711"
SCP_PORT = free_port()  # medsight's C-MOVE destination, as Orthanc's configuration names it


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    with run_orthanc(tmp_path_factory.mktemp("orthanc"), {"medsight": ("MEDSIGHT", SCP_PORT)}) as server:
        yield server


@pytest.fixture(scope="module")
def ct_with_phi(shared_data_module: Path, tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """The 28 CT slices with a patient's name, ID and accession planted, as files."""
    files = []
    for path in sorted((shared_data_module / "dicom" / "ct_head_ge").glob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.PatientName, ds.PatientID, ds.AccessionNumber = PHI_NAME, PHI_ID, ACCESSION
        out = tmp_path_factory.mktemp("ct", numbered=True) / path.name
        ds.save_as(out)
        files.append(out.read_bytes())
    return files


@pytest.fixture(scope="module")
def shared_data_module() -> Path:
    from conftest import SHARED_DATA

    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data folder {SHARED_DATA} is missing (see DESIGN.md).", pytrace=False)
    return SHARED_DATA


@pytest.fixture
def pacs(orthanc: Orthanc, ct_with_phi: list[bytes]) -> Orthanc:
    """Orthanc holding exactly the CT series with PHI."""
    orthanc.clear()
    for data in ct_with_phi:
        orthanc.upload(data)
    assert len(orthanc.rest("GET", "/instances")) == 28
    return orthanc


def node(server: Orthanc) -> PacsNode:
    return PacsNode("127.0.0.1", server.dicom_port, server.aet, "MEDSIGHT")


def original_study_uid(ct_with_phi: list[bytes]) -> str:
    import io

    return str(pydicom.dcmread(io.BytesIO(ct_with_phi[0]), stop_before_pixels=True).StudyInstanceUID)


def assert_stored_without_phi(store: Store, original_uid: str) -> None:
    (study,) = store.find_studies()
    assert (study.series_count, study.instance_count) == (1, 28)
    assert study.study_uid != original_uid
    for series in store.find_series(study.study_uid):
        for record in store.find_instances(series.series_uid):
            data = store.blobs.get(record.sha)
            for phi in (PHI_NAME, PHI_ID, ACCESSION, original_uid):
                assert phi.encode() not in data
    assert check_store(store).ok


@both_backends
def test_cli_pull_by_c_get_stores_the_series_de_identified(
    pacs: Orthanc, ct_with_phi: list[bytes], run_cli, store: Store
) -> None:
    uid = original_study_uid(ct_with_phi)
    args = ["pull", "--host", "127.0.0.1", "--port", pacs.dicom_port, "--aec", "ORTHANC", "--study-uid", uid]
    done = run_cli(*args, "--method", "get")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "study 1/1: 28 instance(s) offered, 28 stored, 0 duplicate, 0 refused" in done.stdout
    assert "pulled 1 study(ies) by get: 28 instance(s) stored" in done.stdout
    for phi in (PHI_NAME, PHI_ID, uid):  # the report names only de-identified UIDs
        assert phi not in done.stdout + done.stderr
    assert_stored_without_phi(store, uid)
    again = run_cli(*args, "--method", "get")
    assert "0 stored, 28 duplicate" in again.stdout, again.stdout + again.stderr


def test_pull_by_c_move_to_a_temporary_receiver(
    pacs: Orthanc, ct_with_phi: list[bytes], store: Store
) -> None:
    report = pull(store, node(pacs), StudyQuery(patient_id=PHI_ID), "move", move_port=SCP_PORT)
    assert report.counts() == {"studies": 1, "stored": 28, "duplicate": 0, "refused": 0, "failed": 0}
    assert_stored_without_phi(store, original_study_uid(ct_with_phi))
    events = audit.query(store, action="import")
    assert events and events[0].detail["stored"] == 28


def test_pull_by_dicomweb_matches_c_get(pacs: Orthanc, ct_with_phi: list[bytes], store: Store) -> None:
    query = StudyQuery(accession=ACCESSION)
    report = pull(store, node(pacs), query, "dicomweb", dicomweb_url=pacs.dicomweb_url)
    assert report.counts()["stored"] == 28
    assert_stored_without_phi(store, original_study_uid(ct_with_phi))
    # the same de-identification as by C-GET: identical stored files, so all duplicates
    again = pull(store, node(pacs), query, "get")
    assert again.counts()["duplicate"] == 28 and again.counts()["stored"] == 0


@both_backends
def test_push_sends_the_stored_study_but_not_flagged_instances(
    pacs: Orthanc, shared_data_module: Path, store: Store, run_cli
) -> None:
    from pydicom.data import get_testdata_file

    pull(store, node(pacs), StudyQuery(patient_id=PHI_ID), "get")
    (study,) = store.find_studies()
    flagged = Path(str(get_testdata_file("SC_rgb_rle.dcm", download=False)))  # secondary capture: flagged
    assert Ingestor(store).ingest_paths([flagged], progress=False).counts()["flagged"] == 1
    pacs.clear()
    done = run_cli("push", "--host", "127.0.0.1", "--port", pacs.dicom_port, "--aec", "ORTHANC")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pushed 28 instance(s) of 2 study(ies); 0 refused by the PACS; 1 flagged" in done.stdout
    tags = pacs.instance_tags()
    assert len(tags) == 28
    assert {t["PatientID"] for t in tags} == {study.patient_pseudonym}
    assert {t["StudyInstanceUID"] for t in tags} == {study.study_uid}
    assert all(PHI_NAME not in str(t) for t in tags)
    exports = audit.query(store, action="export")
    assert {e.resource_id for e in exports} >= {study.study_uid}


def test_push_one_study_by_its_de_identified_uid(pacs: Orthanc, store: Store) -> None:
    pull(store, node(pacs), StudyQuery(patient_id=PHI_ID), "get")
    (study,) = store.find_studies()
    pacs.clear()
    report = push(store, node(pacs), study.study_uid)
    assert (report.sent, report.failed, report.studies) == (28, 0, 1)
    assert len(pacs.rest("GET", "/instances")) == 28


def test_unknown_study_and_unreachable_pacs_are_clear_errors(pacs: Orthanc, run_cli, store: Store) -> None:
    base = ["--host", "127.0.0.1", "--aec", "ORTHANC"]
    none = run_cli("pull", *base, "--port", pacs.dicom_port, "--study-uid", "1.2.3.4.5")
    assert none.returncode == 1 and "no study matched" in none.stdout
    closed = run_cli("pull", *base, "--port", free_port(), "--patient-id", "X")
    assert closed.returncode != 0 and "did not answer" in closed.stderr and "Traceback" not in closed.stderr
    # an AE title Orthanc does not know: it rejects, or (seen in CI) drops the connection
    with pytest.raises(PacsError, match="rejected the association|closed the connection"):
        find_with = PacsNode("127.0.0.1", pacs.dicom_port, "ORTHANC", "STRANGER")
        pull(store, find_with, StudyQuery(patient_id=PHI_ID), "get")
    two_keys = run_cli("pull", *base, "--port", pacs.dicom_port, "--patient-id", "X", "--accession", "Y")
    assert two_keys.returncode != 0 and "exactly one of" in two_keys.stderr
