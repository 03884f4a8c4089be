"""Finding studies, series and instances (what QIDO-RS, the web app and data sets ask for)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session, joinedload

from medsight.store.models import Instance, Patient, Series, Study
from medsight.store.records import InstanceRecord, SeriesRecord, StudyRecord


def instance_record(row: Instance) -> InstanceRecord:
    return InstanceRecord(
        sop_uid=row.sop_instance_uid,
        series_uid=row.series.series_instance_uid,
        study_uid=row.series.study.study_instance_uid,
        sop_class_uid=row.sop_class_uid,
        sha=row.blob_sha256,
        size=row.size,
        transfer_syntax=row.transfer_syntax,
        rows=row.rows,
        columns=row.columns,
        frames=row.frames,
        flags=list(row.flags or []),
        burned_in_text_risk=row.burned_in_text_risk,
        cleared_by=row.cleared_by,
        cleared_at=row.cleared_at,
        created_at=row.created_at,
    )


def _contains(text: str) -> str:
    """A LIKE pattern matching ``text`` literally ('%' and '_' in it are not wildcards)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _instances_with_parents() -> Select[tuple[Instance]]:
    return select(Instance).options(joinedload(Instance.series).joinedload(Series.study))


class QueryMixin:
    if TYPE_CHECKING:

        def session(self) -> AbstractContextManager[Session]: ...

    def find_studies(
        self,
        *,
        patient: str | None = None,
        date_from: dt.date | None = None,
        date_to: dt.date | None = None,
        modality: str | None = None,
        description: str | None = None,
        study_uid: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[StudyRecord]:
        """Studies matching every filter given (dates inclusive; description: case-insensitive substring)."""
        series_count = select(func.count(Series.id)).where(Series.study_id == Study.id).scalar_subquery()
        instance_count = (
            select(func.count(Instance.id)).join(Series).where(Series.study_id == Study.id).scalar_subquery()
        )
        stmt = select(Study, Patient.pseudonym, series_count, instance_count).join(Patient)
        if patient is not None:
            stmt = stmt.where(Patient.pseudonym == patient)
        if study_uid is not None:
            stmt = stmt.where(Study.study_instance_uid == study_uid)
        if date_from is not None:
            stmt = stmt.where(Study.study_date >= date_from)
        if date_to is not None:
            stmt = stmt.where(Study.study_date <= date_to)
        if modality is not None:
            stmt = stmt.where(Study.id.in_(select(Series.study_id).where(Series.modality == modality)))
        if description:
            stmt = stmt.where(Study.description.ilike(_contains(description), escape="\\"))
        stmt = stmt.order_by(Study.study_date.desc(), Study.id).offset(offset).limit(limit)
        with self.session() as session:
            return [
                StudyRecord(
                    s.study_instance_uid, pseudonym, s.study_date, s.modalities, s.description, n_series, n
                )
                for s, pseudonym, n_series, n in session.execute(stmt)
            ]

    def find_series(self, study_uid: str) -> list[SeriesRecord]:
        count = select(func.count(Instance.id)).where(Instance.series_id == Series.id).scalar_subquery()
        stmt = (
            select(Series, count).join(Study).where(Study.study_instance_uid == study_uid).order_by(Series.id)
        )
        with self.session() as session:
            return [
                SeriesRecord(s.series_instance_uid, study_uid, s.modality, s.body_part, s.description, n)
                for s, n in session.execute(stmt)
            ]

    def find_instances(self, series_uid: str, *, include_excluded: bool = True) -> list[InstanceRecord]:
        """A series' instances in the order stored; ``include_excluded=False`` drops uncleared flagged ones."""
        stmt = _instances_with_parents().join(Series).where(Series.series_instance_uid == series_uid)
        if not include_excluded:
            stmt = stmt.where(~_excluded())
        with self.session() as session:
            return [instance_record(row) for row in session.scalars(stmt.order_by(Instance.id))]

    def iter_instances(self, *, include_excluded: bool = False, batch: int = 500) -> Iterator[InstanceRecord]:
        """Every instance (by default without the excluded ones): what training and export read."""
        stmt = _instances_with_parents().order_by(Instance.id)
        if not include_excluded:
            stmt = stmt.where(~_excluded())
        last_id = 0
        while True:  # keyset pages: no long-lived cursor holding a read transaction open
            with self.session() as session:
                rows = list(session.scalars(stmt.where(Instance.id > last_id).limit(batch)))
                records = [instance_record(row) for row in rows]
            yield from records
            if len(rows) < batch:
                return
            last_id = rows[-1].id

    def flagged_instances(self) -> list[InstanceRecord]:
        """Instances kept out of training and export until an admin clears them."""
        with self.session() as session:
            stmt = _instances_with_parents().where(_excluded()).order_by(Instance.id)
            return [instance_record(row) for row in session.scalars(stmt)]


def _excluded() -> ColumnElement[bool]:
    return Instance.burned_in_text_risk.is_(True) & Instance.cleared_at.is_(None)
