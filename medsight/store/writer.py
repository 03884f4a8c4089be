"""Adding instances: blob and rows commit together or not at all.

Crash safety, step by step:

1. The blobs are written first, each atomically and fsynced (``BlobStore.put``).
2. Then the patient/study/series/instance rows and their audit events commit in ONE transaction.

A row is therefore never committed before its blob is durable, so no crash can leave a row
without its blob. A crash between 1 and 2 leaves only orphan blobs: invisible (nothing points
at them), reported and removed by ``check_store(repair=True)``, and simply reused when the same
file is ingested again, which then completes. When step 2 fails with an exception, the blobs
step 1 created are deleted again at once, unless some row references them by then.

A batch (``add_instances``) writes its blobs from a few threads: their fsyncs overlap and the
file system commits them together, many times faster than one after another, and the batch's
rows share one transaction. That is where ingest speed comes from.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from medsight.store import audit
from medsight.store.blobs import BlobStore
from medsight.store.models import Base, Instance, Patient, Series, Study
from medsight.store.records import BURNED_IN_TEXT_RISK, AddResult, InstanceMeta

if TYPE_CHECKING:
    from medsight.store.users import User

Row = TypeVar("Row", bound=Base)
_IN_CHUNK = 500  # bound parameters per IN (...) query, well under every backend's limit


class InstanceWriterMixin:
    if TYPE_CHECKING:
        blobs: BlobStore

        def session(self) -> AbstractContextManager[Session]: ...

        def write(self) -> AbstractContextManager[Session]: ...

    def add_instance(
        self,
        deidentified_bytes: bytes,
        meta: InstanceMeta,
        *,
        user: User | str | None = None,
        client: str | None = None,
    ) -> AddResult:
        """Store one de-identified DICOM file and index it; a SOP Instance UID already stored is a duplicate.

        A duplicate keeps what was stored first, even when the new bytes differ (``sha`` says which blob).
        """
        return self.add_instances([(deidentified_bytes, meta)], user=user, client=client)[0]

    def add_instances(
        self,
        items: Sequence[tuple[bytes, InstanceMeta]],
        *,
        user: User | str | None = None,
        client: str | None = None,
        workers: int = 4,
    ) -> list[AddResult]:
        """Store a batch of de-identified files (results in the same order); all rows in one transaction."""
        known = self.instance_shas([meta.sop_uid for _, meta in items])
        fresh: dict[str, int] = {}  # sop_uid -> index of its first occurrence in this batch
        for index, (_, meta) in enumerate(items):
            if meta.sop_uid not in known:
                fresh.setdefault(meta.sop_uid, index)
        outcomes = _put_blobs(self.blobs, [items[i][0] for i in fresh.values()], workers)
        created = [out[0] for out in outcomes if isinstance(out, tuple) and out[1]]
        failure = next((out for out in outcomes if isinstance(out, Exception)), None)
        if failure is not None:
            self._discard_blobs(created)
            raise failure
        shas = {sop: out[0] for sop, out in zip(fresh, outcomes, strict=True) if isinstance(out, tuple)}
        try:
            lost = self._commit_rows(items, fresh, shas, known, user, client)
        except BaseException:
            self._discard_blobs(created)
            raise
        if lost:  # another writer stored these SOP instances between our check and our commit
            known.update(self.instance_shas(lost))
            self._discard_blobs([shas[sop] for sop in lost if shas[sop] in created])
            for sop in lost:
                audit.record(self, "write", "instance", sop, user, client, outcome="duplicate")
        return [
            AddResult("stored", meta.sop_uid, shas[meta.sop_uid])
            if fresh.get(meta.sop_uid) == index and meta.sop_uid not in lost
            else AddResult("duplicate", meta.sop_uid, known.get(meta.sop_uid) or shas[meta.sop_uid])
            for index, (_, meta) in enumerate(items)
        ]

    def instance_shas(self, sop_uids: Sequence[str]) -> dict[str, str]:
        """sop_uid -> blob SHA-256 for those of ``sop_uids`` that are stored."""
        found: dict[str, str] = {}
        unique = list(dict.fromkeys(sop_uids))
        with self.session() as session:
            for start in range(0, len(unique), _IN_CHUNK):
                chunk = unique[start : start + _IN_CHUNK]
                stmt = select(Instance.sop_instance_uid, Instance.blob_sha256)
                found.update(
                    (sop, sha)
                    for sop, sha in session.execute(stmt.where(Instance.sop_instance_uid.in_(chunk)))
                )
        return found

    def _commit_rows(
        self,
        items: Sequence[tuple[bytes, InstanceMeta]],
        fresh: dict[str, int],
        shas: dict[str, str],
        known: dict[str, str],
        user: User | str | None,
        client: str | None,
    ) -> list[str]:
        """Insert the batch's rows in one transaction; returns the SOP UIDs another writer got in first."""
        lost: list[str] = []
        parents: dict[tuple[type, str], Base] = {}  # patients/studies/series met in this batch
        with self.write() as session:
            for index, (data, meta) in enumerate(items):
                if fresh.get(meta.sop_uid) != index:
                    audit.record(
                        session, "write", "instance", meta.sop_uid, user, client, outcome="duplicate"
                    )
                    continue
                try:
                    with session.begin_nested():  # a lost race undoes this item only, not the batch
                        _insert_rows(session, meta, shas[meta.sop_uid], len(data), parents)
                except IntegrityError:
                    lost.append(meta.sop_uid)
                    parents.clear()  # rows made inside the undone savepoint are gone
                    continue
                detail = {"sha256": shas[meta.sop_uid]}
                audit.record(session, "write", "instance", meta.sop_uid, user, client, detail=detail)
        return lost

    def _discard_blobs(self, shas: list[str]) -> None:
        """Undo blobs this call created; failing that, they stay orphans for ``check --repair``."""
        if not shas:
            return
        try:
            with self.session() as session:
                used = set(
                    session.scalars(select(Instance.blob_sha256).where(Instance.blob_sha256.in_(shas)))
                )
            for sha in set(shas) - used:
                self.blobs.delete(sha)
        except Exception:  # noqa: BLE001 - the original error matters more; an orphan is harmless
            pass


def _put_blobs(blobs: BlobStore, payloads: list[bytes], workers: int) -> list[tuple[str, bool] | Exception]:
    """``blobs.put`` each payload from up to ``workers`` threads: (sha, created), or the error it met."""

    def put(data: bytes) -> tuple[str, bool] | Exception:
        try:
            return blobs.put(data)
        except Exception as err:  # noqa: BLE001 - handed back, so the caller can undo the others first
            return err

    if len(payloads) <= 1 or workers <= 1:
        return [put(data) for data in payloads]
    with ThreadPoolExecutor(min(workers, len(payloads)), thread_name_prefix="blob-put") as pool:
        return list(pool.map(put, payloads))


def _insert_rows(
    session: Session, meta: InstanceMeta, sha: str, size: int, parents: dict[tuple[type, str], Base]
) -> None:
    patient = _get_or_create(session, parents, Patient, {"pseudonym": meta.patient_pseudonym}, {})
    study = _get_or_create(
        session,
        parents,
        Study,
        {"study_instance_uid": meta.study_uid},
        {"patient": patient, "study_date": meta.study_date, "description": meta.study_description[:255]},
    )
    series_values = {
        "study": study,
        "modality": meta.modality[:16],
        "body_part": meta.body_part[:64],
        "description": meta.series_description[:255],
    }
    series = _get_or_create(session, parents, Series, {"series_instance_uid": meta.series_uid}, series_values)
    _add_modality(study, meta.modality)
    session.add(
        Instance(
            sop_instance_uid=meta.sop_uid,
            sop_class_uid=meta.sop_class_uid,
            series=series,
            blob_sha256=sha,
            size=size,
            transfer_syntax=meta.transfer_syntax,
            rows=meta.rows,
            columns=meta.columns,
            frames=meta.frames,
            flags=list(meta.flags),
            burned_in_text_risk=BURNED_IN_TEXT_RISK in meta.flags,
        )
    )


def _add_modality(study: Study, modality: str) -> None:
    """Keep the study's modality summary ("CT\\SR"), as QIDO-RS ModalitiesInStudy reports it."""
    present = set(filter(None, (study.modalities or "").split("\\")))
    if modality and modality not in present:
        study.modalities = "\\".join(sorted(present | {modality}))[:64]


def _get_or_create(
    session: Session,
    cache: dict[tuple[type, str], Base],
    model: type[Row],
    key: dict[str, Any],
    values: dict[str, Any],
) -> Row:
    """The row with ``key`` (one column), created with ``values`` if missing; a concurrent creator wins cleanly."""
    cache_key = (model, str(next(iter(key.values()))))
    if cache_key in cache:
        return cache[cache_key]  # type: ignore[return-value]
    row = session.scalars(select(model).filter_by(**key)).one_or_none()
    if row is not None:
        cache[cache_key] = row
        return row
    try:
        with session.begin_nested():  # a SAVEPOINT: losing the race must not abort the whole transaction
            row = model(**key, **values)
            session.add(row)
    except IntegrityError:
        row = session.scalars(select(model).filter_by(**key)).one()
    cache[cache_key] = row
    return row
