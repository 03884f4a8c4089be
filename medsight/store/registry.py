"""The models registry (name + version → run folder and metrics) and labels on studies and instances."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from medsight.errors import BadInputError
from medsight.store import audit
from medsight.store.errors import DuplicateError, NotFoundError
from medsight.store.models import Instance, Label, ModelEntry, Study
from medsight.store.records import LabelRecord, ModelRecord

if TYPE_CHECKING:
    from medsight.store.users import User


def model_not_found(name: str, version: str | None) -> NotFoundError:
    which = f"{name!r} version {version!r}" if version else repr(name)
    return NotFoundError(f"no model {which} is registered; `medsight models` lists them.")


def _model_record(row: ModelEntry) -> ModelRecord:
    return ModelRecord(row.name, row.version, row.run_path, dict(row.metrics or {}), row.created_at)


class RegistryMixin:
    if TYPE_CHECKING:

        def session(self) -> AbstractContextManager[Session]: ...

        def write(self) -> AbstractContextManager[Session]: ...

    def register_model(
        self,
        name: str,
        version: str,
        run_path: str,
        metrics: dict[str, Any] | None = None,
        *,
        user: User | str | None = None,
    ) -> ModelRecord:
        """Record a trained model; (name, version) is unique, so a version is never silently replaced."""
        if not name or not version:
            raise BadInputError("a model needs a name and a version.")
        try:
            with self.write() as session:
                row = ModelEntry(name=name, version=version, run_path=str(run_path), metrics=metrics or {})
                session.add(row)
                session.flush()
                audit.record(
                    session, "write", "model", f"{name}:{version}", user, detail={"run_path": str(run_path)}
                )
                return _model_record(row)
        except IntegrityError:
            existing = self.get_model(name, version)
            raise DuplicateError(
                f"model {name!r} version {version!r} is already registered (run {existing.run_path}); "
                "register this one under a new version."
            ) from None

    def get_model(self, name: str, version: str | None = None) -> ModelRecord:
        """One model version; without ``version``, the most recently registered one."""
        stmt = select(ModelEntry).where(ModelEntry.name == name)
        if version is not None:
            stmt = stmt.where(ModelEntry.version == version)
        with self.session() as session:
            row = session.scalars(stmt.order_by(ModelEntry.created_at.desc(), ModelEntry.id.desc())).first()
        if row is None:
            raise model_not_found(name, version)
        return _model_record(row)

    def list_models(self, name: str | None = None) -> list[ModelRecord]:
        stmt = select(ModelEntry).order_by(ModelEntry.name, ModelEntry.created_at, ModelEntry.id)
        if name is not None:
            stmt = stmt.where(ModelEntry.name == name)
        with self.session() as session:
            return [_model_record(row) for row in session.scalars(stmt)]

    def add_label(
        self,
        name: str,
        value: str,
        source: str = "",
        *,
        sop_uid: str | None = None,
        study_uid: str | None = None,
        user: User | str | None = None,
    ) -> LabelRecord:
        """Attach a label (e.g. "finding" = "pneumonia", source "radiologist") to one instance or one study."""
        if (sop_uid is None) == (study_uid is None):
            raise BadInputError(
                "a label belongs to exactly one instance or one study: give sop_uid or study_uid."
            )
        with self.write() as session:
            label = Label(name=name[:64], value=str(value)[:255], source=source[:64])
            if sop_uid is not None:
                label.instance_id = _id_of(
                    session, Instance.id, Instance.sop_instance_uid, sop_uid, "instance"
                )
            else:
                label.study_id = _id_of(session, Study.id, Study.study_instance_uid, study_uid or "", "study")
            session.add(label)
            audit.record(session, "write", "label", sop_uid or study_uid, user, detail={"name": name})
        return LabelRecord(label.name, label.value, label.source, sop_uid, study_uid)

    def labels(self, *, sop_uid: str | None = None, study_uid: str | None = None) -> list[LabelRecord]:
        """Labels of one instance, of one study (its own, not its instances'), or all when neither is given."""
        stmt = (
            select(Label, Instance.sop_instance_uid, Study.study_instance_uid)
            .outerjoin(Instance, Label.instance_id == Instance.id)
            .outerjoin(Study, Label.study_id == Study.id)
            .order_by(Label.id)
        )
        if sop_uid is not None:
            stmt = stmt.where(Instance.sop_instance_uid == sop_uid)
        if study_uid is not None:
            stmt = stmt.where(Study.study_instance_uid == study_uid)
        with self.session() as session:
            return [
                LabelRecord(lb.name, lb.value, lb.source, sop, study)
                for lb, sop, study in session.execute(stmt)
            ]


def _id_of(session: Session, id_column: Any, uid_column: Any, uid: str, what: str) -> int:
    row_id = session.scalar(select(id_column).where(uid_column == uid))
    if row_id is None:
        raise NotFoundError(f"no {what} with UID {uid} in the store.")
    return row_id
