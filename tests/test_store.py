"""The store (medsight/store) against both backends: SQLite in MEDSIGHT_HOME and PostgreSQL at 127.0.0.1:5432.

Every test here that opens the store runs on both. conftest.py gives each PostgreSQL run its own
schema (``medsight_test_<random>_<n>``), reached through ``search_path``, and drops it afterwards.
Without a PostgreSQL server those runs are skipped, saying so — except under CI=true, where that
is a failure.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import io
import os
import secrets
import signal
import stat
import subprocess
import sys
import threading
from functools import lru_cache
from pathlib import Path

import pydicom
import pytest
from conftest import BACKENDS
from pydicom.data import get_testdata_file
from sqlalchemy import event, inspect, select, text, update

from medsight.errors import BadInputError, ConfigError
from medsight.store import (
    PERMISSIONS,
    AddResult,
    AuthenticationError,
    BlobIntegrityError,
    BlobStore,
    DuplicateError,
    InstanceMeta,
    PermissionDeniedError,
    Role,
    Store,
    User,
    add_user,
    audit,
    authenticate,
    authenticate_token,
    check_store,
    create_token,
    list_tokens,
    open_store,
    require,
    revoke_token,
)
from medsight.store.db import current_revision, head_revision
from medsight.store.linkage import Linkage
from medsight.store.models import ApiToken, AuditEvent, Instance, LinkageEntry, UserAccount, utcnow

TABLES = {
    "patients",
    "studies",
    "series",
    "instances",
    "labels",
    "users",
    "tokens",
    "audit_events",
    "models",
    "linkage",
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test here that opens the store runs on both backends (the fixtures are in conftest.py)."""
    if "db_url" in metafunc.fixturenames:
        metafunc.parametrize("db_url", BACKENDS, indirect=True)


@lru_cache
def _template(name: str) -> pydicom.Dataset:
    return pydicom.dcmread(get_testdata_file(name, download=False))


def make_instance(
    n: int = 1,
    *,
    template: str = "CT_small.dcm",
    patient: str = "PSEUDO-1",
    study: str = "1.2.826.0.1.3680043.10.9999.1",
    series: str | None = None,
    date: str = "20200315",
    description: str = "CHEST CT",
    flags: list[str] | None = None,
) -> tuple[bytes, InstanceMeta]:
    """A real DICOM file (pydicom's test data) re-labelled as if de-identified, and its metadata."""
    ds = copy.deepcopy(_template(template))
    ds.PatientID, ds.PatientName = patient, patient
    ds.StudyInstanceUID, ds.StudyDate, ds.StudyDescription = study, date, description
    ds.SeriesInstanceUID = series or study + ".1"
    ds.SOPInstanceUID = f"{ds.SeriesInstanceUID}.{n}"
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue(), InstanceMeta.from_dataset(ds, flags)


def blob_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# -- database and migrations ---------------------------------------------------------------------


def test_migrations_create_the_schema(store: Store, db_url: str) -> None:
    assert set(inspect(store.engine).get_table_names()) >= TABLES
    assert current_revision(store.engine) == head_revision()
    with open_store(db_url) as again:  # reopening an up-to-date store is a no-op
        assert current_revision(again.engine) == head_revision()
    if store.engine.dialect.name == "postgresql":
        schema = db_url.rsplit("%3D", 1)[1]
        with store.engine.connect() as conn:
            assert conn.scalar(text("SELECT current_schema()")) == schema  # not public


def test_sqlite_default_is_a_wal_file_in_home(medsight_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDSIGHT_DB_URL", raising=False)
    with open_store() as opened:
        assert (medsight_env / "medsight.db").is_file() and opened.blobs.root == medsight_env / "blobs"
        with opened.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        statements: list[str] = []
        event.listen(opened.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
        with opened.write() as session:  # writers take SQLite's write lock up front
            session.execute(text("SELECT 1"))
        assert statements[0] == "BEGIN IMMEDIATE"


def test_a_bad_database_url_is_a_clear_config_error() -> None:
    with pytest.raises(ConfigError, match="SQLite and PostgreSQL, not mysql"):
        open_store("mysql://db/medsight")
    with pytest.raises(ConfigError, match="not a database URL"):
        open_store("no url at all")


# -- instances and blobs -------------------------------------------------------------------------


def test_add_instance_stored_then_duplicate(store: Store) -> None:
    data, meta = make_instance()
    first = store.add_instance(data, meta, user="ingest")
    assert first.status == "stored" and first.sha == hashlib.sha256(data).hexdigest()
    second = store.add_instance(data, meta, user="ingest")
    assert (second.status, second.sha) == ("duplicate", first.sha)
    assert len(blob_files(store.blobs.root)) == 1  # the duplicate was stored once
    assert store.get_instance_bytes(meta.sop_uid, user="alice") == data
    [study] = store.find_studies()
    assert (study.patient_pseudonym, study.modalities, study.instance_count) == ("PSEUDO-1", "CT", 1)
    assert study.study_date == dt.date(2020, 3, 15)
    [series] = store.find_series(meta.study_uid)
    [instance] = store.find_instances(series.series_uid)
    assert (instance.rows, instance.columns, instance.frames, instance.size) == (128, 128, 1, len(data))
    assert [e.outcome for e in audit.query(store, action="write")] == ["duplicate", "ok"]
    assert audit.query(store, action="read")[0].user == "alice"


def test_add_instances_batch_keeps_order_and_stores_each_file_once(store: Store) -> None:
    already = make_instance(0)
    store.add_instance(*already)
    batch = [make_instance(n) for n in range(1, 21)]
    results = store.add_instances([already, *batch, batch[3]], user="ingest")
    assert [r.status for r in results] == ["duplicate"] + ["stored"] * 20 + ["duplicate"]
    assert [r.sop_instance_uid for r in results] == [m.sop_uid for _, m in [already, *batch, batch[3]]]
    assert results[-1].sha == results[4].sha
    assert len(blob_files(store.blobs.root)) == 21 and check_store(store).ok
    [series] = store.find_series("1.2.826.0.1.3680043.10.9999.1")
    assert series.instance_count == 21


def test_a_lost_race_is_a_duplicate_and_leaves_no_orphan(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, meta = make_instance()
    first = store.add_instance(data, meta)
    # Another writer got in between our "is it stored?" check and our commit: the check saw nothing.
    real = Store.instance_shas
    calls: list[list[str]] = []

    def first_check_sees_nothing(self: Store, uids: list[str]) -> dict[str, str]:
        calls.append(uids)
        return {} if len(calls) == 1 else real(self, uids)

    monkeypatch.setattr(Store, "instance_shas", first_check_sees_nothing)
    changed = make_instance(description="OTHER BYTES, SAME SOP INSTANCE UID")
    assert store.add_instance(*changed) == AddResult("duplicate", meta.sop_uid, first.sha)
    assert blob_files(store.blobs.root) == [store.blobs.path(first.sha)]
    assert store.get_instance_bytes(meta.sop_uid) == data
    assert len(calls) == 3  # the check, the re-check after the lost insert, and the read


def test_concurrent_writers_share_patients_studies_and_series(db_url: str) -> None:
    stores = [open_store(db_url) for _ in range(3)]
    errors: list[BaseException] = []

    def ingest(k: int) -> None:
        try:
            for n in range(4):
                stores[k].add_instance(*make_instance(10 * k + n))
                stores[k].add_instance(*make_instance(999))  # every writer also races for the same instance
        except BaseException as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=ingest, args=(k,)) for k in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        [study] = stores[0].find_studies()
        assert (study.series_count, study.instance_count) == (1, 13)
        assert check_store(stores[0]).ok and len(blob_files(stores[0].blobs.root)) == 13
    finally:
        for opened in stores:
            opened.close()


def test_a_failed_blob_write_undoes_the_batch(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    real_put = BlobStore.put
    batch = [make_instance(n) for n in range(6)]

    def put(self: BlobStore, data: bytes) -> tuple[str, bool]:
        if data == batch[4][0]:
            raise OSError("No space left on device")
        return real_put(self, data)

    monkeypatch.setattr(BlobStore, "put", put)
    with pytest.raises(OSError, match="No space"):
        store.add_instances(batch)
    assert blob_files(store.blobs.root) == [] and store.find_studies() == []


def test_blob_is_encrypted_and_tampering_is_detected(store: Store) -> None:
    data, meta = make_instance()
    sha = store.add_instance(data, meta).sha
    path = store.blobs.path(sha)
    raw = path.read_bytes()
    pixels = _template("CT_small.dcm").PixelData
    assert data not in raw and pixels[1000:1064] not in raw and meta.sop_uid.encode() not in raw
    tampered = bytearray(raw)
    tampered[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(tampered))
    with pytest.raises(BlobIntegrityError, match=sha):
        store.get_instance_bytes(meta.sop_uid)
    path.write_bytes(raw)
    with pytest.raises(BlobIntegrityError, match="different blob key"):
        BlobStore(store.blobs.root, secrets.token_bytes(32)).get(sha)


def test_blob_key_file_is_created_private(medsight_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDSIGHT_BLOB_KEY", raising=False)
    blobs = BlobStore()
    key_file = medsight_env / "keys" / "blobs.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    sha, created = blobs.put(b"hello")
    assert created and BlobStore().get(sha) == b"hello"  # the same key is read back


def test_atomic_write_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blobs = BlobStore(tmp_path / "blobs", secrets.token_bytes(32))
    sha, _ = blobs.put(b"first")
    assert blob_files(blobs.root) == [blobs.path(sha)]

    def crash(*_args: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        blobs.put(b"second")
    assert blob_files(blobs.root) == [blobs.path(sha)]  # neither a temp file nor a half blob


def test_rows_and_blob_commit_together(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    data, meta = make_instance()

    def database_fails(*_args: object) -> None:
        raise RuntimeError("database went away mid-insert")

    event.listen(Instance, "before_insert", database_fails)
    try:
        with pytest.raises(RuntimeError, match="went away"):
            store.add_instance(data, meta)
        assert store.find_studies() == [] and blob_files(store.blobs.root) == []  # no row, no orphan

        # A crash (no except path runs) leaves an orphan: check finds it and repair removes it.
        monkeypatch.setattr(BlobStore, "delete", lambda self, sha: False)
        with pytest.raises(RuntimeError):
            store.add_instance(data, meta)
        monkeypatch.undo()
    finally:
        event.remove(Instance, "before_insert", database_fails)
    report = check_store(store)
    assert not report.ok and len(report.orphans) == 1
    assert check_store(store, repair=True).removed_orphans == report.orphans
    assert blob_files(store.blobs.root) == [] and check_store(store).ok
    assert store.add_instance(data, meta).status == "stored"  # re-running the ingest completes it


KILLED_INGEST = """
import sys
sys.path.insert(0, {tests!r})
from test_store import make_instance
from medsight.store import open_store
with open_store({url!r}) as store:
    for n in range({count}):
        store.add_instance(*make_instance(n))
        print(n, flush=True)
"""


def test_kill_9_mid_ingest_then_check_is_clean_and_rerun_completes(db_url: str) -> None:
    count = 200
    script = KILLED_INGEST.format(tests=str(Path(__file__).parent), url=db_url, count=count)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    for _ in range(15):  # let it store a few, then kill it wherever it is
        assert child.stdout.readline(), "the ingest subprocess died on its own"
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    with open_store(db_url) as store:
        report = check_store(store, repair=True)
        assert report.missing == [] and report.corrupt == [] and report.ok, report.summary()
        assert check_store(store).orphans == [] and list(store.blobs.iter_temp_files()) == []
        stored_before = store.find_studies()[0].instance_count
        assert 15 <= stored_before < count
        results = store.add_instances([make_instance(n) for n in range(count)])
        assert {r.status for r in results[:stored_before]} == {"duplicate"}
        assert store.find_studies()[0].instance_count == count and check_store(store).ok


def test_check_store_finds_missing_corrupt_and_orphan_and_repairs_only_orphans(store: Store) -> None:
    added = [make_instance(n) for n in (1, 2, 3)]
    shas = [store.add_instance(data, meta).sha for data, meta in added]
    store.blobs.delete(shas[0])
    corrupt_path = store.blobs.path(shas[1])
    corrupt_path.write_bytes(corrupt_path.read_bytes()[:-1] + b"\0")
    orphan, _ = store.blobs.put(b"nobody points at me")
    stale_temp = store.blobs.path(orphan).parent / ".tmp-crashed-write"
    stale_temp.write_bytes(b"half")

    report = check_store(store)
    assert report.missing == [(added[0][1].sop_uid, shas[0])]
    assert [(sop, sha) for sop, sha, _ in report.corrupt] == [(added[1][1].sop_uid, shas[1])]
    assert report.orphans == [orphan] and report.temp_files == [stale_temp] and not report.ok

    repaired = check_store(store, repair=True)
    assert repaired.removed_orphans == [orphan] and repaired.removed_temp_files == [stale_temp]
    assert not store.blobs.exists(orphan) and not stale_temp.exists()
    assert corrupt_path.exists() and store.blobs.exists(shas[2])  # damaged data is reported, never deleted
    after = check_store(store)
    assert (len(after.missing), len(after.corrupt), after.orphans) == (1, 1, [])


def test_find_studies_filters(store: Store) -> None:
    store.add_instance(
        *make_instance(1, patient="P-A", study="1.2.3.1", date="20190101", description="Head CT")
    )
    store.add_instance(
        *make_instance(
            1, template="MR_small.dcm", patient="P-B", study="1.2.3.2", date="20210601", description="Knee MR"
        )
    )
    store.add_instance(*make_instance(2, patient="P-B", study="1.2.3.2", series="1.2.3.2.9", date="20210601"))

    def uids(**filters: object) -> list[str]:
        return sorted(s.study_uid for s in store.find_studies(**filters))

    assert uids() == ["1.2.3.1", "1.2.3.2"]
    assert uids(patient="P-B") == ["1.2.3.2"]
    assert uids(date_from=dt.date(2020, 1, 1)) == ["1.2.3.2"]
    assert uids(date_to=dt.date(2020, 1, 1)) == ["1.2.3.1"]
    assert uids(modality="MR") == ["1.2.3.2"] and uids(modality="CT") == ["1.2.3.1", "1.2.3.2"]
    assert uids(description="head") == ["1.2.3.1"] and uids(description="%") == []
    [mixed] = store.find_studies(patient="P-B")
    assert (mixed.modalities, mixed.series_count, mixed.instance_count) == ("CT\\MR", 2, 2)
    store.add_label("finding", "effusion", "radiologist", study_uid="1.2.3.1")
    assert [(lb.name, lb.value, lb.study_uid) for lb in store.labels()] == [
        ("finding", "effusion", "1.2.3.1")
    ]


def test_flagged_instances_are_excluded_until_an_admin_clears_them(store: Store) -> None:
    data, meta = make_instance(flags=["burned_in_text_risk"])
    store.add_instance(data, meta)
    assert [i.sop_uid for i in store.flagged_instances()] == [meta.sop_uid]
    assert list(store.iter_instances()) == []
    with pytest.raises(PermissionDeniedError, match="clinician"):
        store.clear_flag(meta.sop_uid, User("carol", Role.CLINICIAN))
    cleared = store.clear_flag(meta.sop_uid, User("root", Role.ADMIN), client="10.0.0.7")
    assert cleared.cleared_by == "root" and not cleared.excluded
    assert store.flagged_instances() == [] and [i.sop_uid for i in store.iter_instances()] == [meta.sop_uid]
    assert [(e.user, e.outcome) for e in audit.query(store, action="clear_flag")] == [
        ("root", "ok"),
        ("carol", "denied"),
    ]


# -- users, tokens, roles ------------------------------------------------------------------------


def test_passwords_are_argon2_hashed_and_failures_audited(store: Store) -> None:
    add_user(store, "alice", "clinician", "correct horse battery")
    with store.session() as session:
        stored = session.scalar(select(UserAccount.password_hash).where(UserAccount.name == "alice"))
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    assert authenticate(store, "alice", "correct horse battery", client="10.1.1.1") == User(
        "alice", Role.CLINICIAN
    )
    with pytest.raises(AuthenticationError, match="wrong user name or password") as wrong:
        authenticate(store, "alice", "wrong horse battery")
    with pytest.raises(AuthenticationError) as unknown:
        authenticate(store, "mallory", "whatever123")
    assert str(wrong.value) == str(unknown.value)  # no hint whether the user exists
    events = audit.query(store, user="alice")
    assert [(e.action, e.outcome) for e in events][:2] == [("login_failed", "denied"), ("login", "ok")]
    assert events[1].client == "10.1.1.1"
    assert [e.resource_id for e in audit.query(store, action="login_failed")] == ["mallory", "alice"]
    with pytest.raises(BadInputError, match="at least 8"):
        add_user(store, "bob", "viewer", "short")
    with pytest.raises(BadInputError, match="unknown role"):
        add_user(store, "bob", "janitor", "long enough pw")
    with pytest.raises(DuplicateError, match="alice"):
        add_user(store, "alice", "viewer", "another password")


def test_tokens_shown_once_stored_hashed_expire_and_revoke(store: Store) -> None:
    add_user(store, "rita", "researcher", "research pw 1")
    token = create_token(store, "rita", name="laptop")
    assert token.startswith("ms_") and len(token) > 40
    with store.session() as session:
        row = session.scalars(select(ApiToken)).one()
        assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
        assert token not in repr([row.token_hash, row.name])
    assert "ms_" not in repr(list_tokens(store))  # listing never shows a token again
    assert authenticate_token(store, token) == User("rita", Role.RESEARCHER)
    assert list_tokens(store, "rita")[0].last_used_at is not None

    with pytest.raises(AuthenticationError, match="unknown API token"):
        authenticate_token(store, "ms_" + "x" * 43)
    with pytest.raises(AuthenticationError, match="not a medsight API token"):
        authenticate_token(store, "Basic abc")

    expiring = create_token(store, "rita", expires_in_days=1)
    with store.write() as session:
        session.execute(
            update(ApiToken)
            .where(ApiToken.token_hash == hashlib.sha256(expiring.encode()).hexdigest())
            .values(expires_at=utcnow() - dt.timedelta(seconds=1))
        )
    with pytest.raises(AuthenticationError, match="expired") as expired:
        authenticate_token(store, expiring)
    assert expiring not in str(expired.value)

    revoke_token(store, list_tokens(store, "rita")[0].id, by="rita")
    with pytest.raises(AuthenticationError, match="revoked") as revoked:
        authenticate_token(store, token)
    assert token not in str(revoked.value)
    assert [t.status for t in list_tokens(store)] == ["revoked", "expired"]
    assert [e.outcome for e in audit.query(store, user="rita", action="login_failed")] == ["denied", "denied"]


@pytest.mark.parametrize("permission", sorted(PERMISSIONS))
def test_role_permission_table_is_enforced(permission: str) -> None:
    for role in Role:
        user = User(f"u-{role.value}", role)
        if role.value in PERMISSIONS[permission]:
            require(user, permission)
        else:
            with pytest.raises(PermissionDeniedError, match=role.value):
                require(user, permission)
    with pytest.raises(PermissionDeniedError, match="disabled"):
        require(User("gone", Role.ADMIN, active=False), permission)


def test_role_permission_table_says_what_the_issue_says() -> None:
    assert (
        PERMISSIONS["users:manage"]
        == {"admin"}
        == PERMISSIONS["instances:clear-flag"]
        == PERMISSIONS["audit:read"]
    )
    assert PERMISSIONS["studies:upload"] == {"admin", "clinician"} == PERMISSIONS["predict"]
    assert PERMISSIONS["datasets:export"] == {"admin", "researcher"} == PERMISSIONS["train"]
    assert PERMISSIONS["results:read"] == {r.value for r in Role}
    assert PERMISSIONS["results:read-all"] == {"admin", "viewer"}
    assert "viewer" not in PERMISSIONS["studies:read"]


# -- audit, models, linkage ----------------------------------------------------------------------


def test_audit_query_by_user_since_and_action(store: Store) -> None:
    audit.record(store, "read", "study", "1.2.3", user="alice", client="10.0.0.1")
    audit.record(store, "export", "dataset", "chest", user="bob")
    with store.write() as session:  # an old event, written as it would have been a day ago
        session.add(
            AuditEvent(
                time=utcnow() - dt.timedelta(days=1),
                user_name="alice",
                action="read",
                resource_type="study",
                resource_id="0.0.1",
                outcome="ok",
            )
        )
    since = utcnow() - dt.timedelta(hours=1)
    assert [e.resource_id for e in audit.query(store, user="alice")] == ["1.2.3", "0.0.1"]
    assert [e.resource_id for e in audit.query(store, user="alice", since=since)] == ["1.2.3"]
    assert [e.user for e in audit.query(store, action="export")] == ["bob"]
    assert len(audit.query(store, limit=2)) == 2
    with store.session() as session:
        assert session.scalar(select(AuditEvent.client).where(AuditEvent.user_name == "alice").limit(1))


def test_models_registry_unique_name_and_version(store: Store) -> None:
    first = store.register_model("pneumonia", "1", "runs/p1", {"auc": 0.91})
    store.register_model("pneumonia", "2", "runs/p2", {"auc": 0.93})
    with pytest.raises(
        DuplicateError, match=r"'pneumonia' version '1' is already registered \(run runs/p1\)"
    ):
        store.register_model("pneumonia", "1", "runs/other")
    assert [(m.version, m.metrics["auc"]) for m in store.list_models("pneumonia")] == [
        ("1", 0.91),
        ("2", 0.93),
    ]
    assert store.get_model("pneumonia").version == "2" and store.get_model("pneumonia", "1") == first


def test_linkage_is_encrypted_under_its_own_key(store: Store, medsight_env: Path) -> None:
    assert not (medsight_env / "keys" / "linkage.key").exists()  # no linkage unless asked for
    linkage = Linkage(store)
    linkage.remember("patient_id", "HOSP-0042 Jane Doe", "PSEUDO-9")
    assert linkage.original_of("patient_id", "PSEUDO-9") == "HOSP-0042 Jane Doe"
    assert linkage.original_of("patient_id", "nobody") is None
    with store.session() as session:
        sealed = session.scalar(select(LinkageEntry.original_encrypted))
    assert b"Jane" not in sealed and b"HOSP" not in sealed
    assert stat.S_IMODE((medsight_env / "keys" / "linkage.key").stat().st_mode) == 0o600
    with pytest.raises(BlobIntegrityError, match="MEDSIGHT_LINKAGE_KEY"):
        Linkage(store, key=secrets.token_bytes(32)).original_of("patient_id", "PSEUDO-9")
