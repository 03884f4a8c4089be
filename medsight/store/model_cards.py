"""Model cards beside the models registry: what each registered version was trained on, how well it did,
what it is for, and which version answers when a caller names no model (the default).

A card is a JSON document written once at registration (``medsight.predict.registration`` builds it
from the run folder); the registry row and its card commit together, so no model is servable
without a card and no card describes a model that is not registered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import ForeignKey, String, case, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from medsight.errors import BadInputError
from medsight.store import audit
from medsight.store.errors import DuplicateError, NotFoundError
from medsight.store.models import Base, ModelEntry
from medsight.store.records import ModelRecord
from medsight.store.registry import _model_record, model_not_found

if TYPE_CHECKING:
    from medsight.store.store import Store
    from medsight.store.users import User


class ModelCardRow(Base):
    __tablename__ = "model_cards"
    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), unique=True)
    card: Mapped[dict[str, Any]]
    is_default: Mapped[bool] = mapped_column(default=False)
    registered_by: Mapped[str | None] = mapped_column(String(64))


@dataclass(frozen=True)
class CardedModel:
    """A registered model version with its card (empty when it was registered without one)."""

    model: ModelRecord
    card: dict[str, Any]
    is_default: bool

    @property
    def key(self) -> str:
        return f"{self.model.name}:{self.model.version}"


def register_with_card(
    store: Store,
    name: str,
    version: str,
    run_path: str,
    metrics: dict[str, Any],
    card: dict[str, Any],
    *,
    default: bool = False,
    user: User | str | None = None,
) -> CardedModel:
    """Register (name, version) with its card, in one transaction; ``default`` makes it the default model."""
    if not name or not version:
        raise BadInputError("a model needs a name and a version.")
    who = user if isinstance(user, str) or user is None else user.name
    try:
        with store.write() as session:
            entry = ModelEntry(name=name, version=version, run_path=str(run_path), metrics=metrics)
            session.add(entry)
            session.flush()
            if default:  # one default at a time
                session.execute(update(ModelCardRow).values(is_default=False))
            session.add(ModelCardRow(model_id=entry.id, card=card, is_default=default, registered_by=who))
            detail = {"run_path": str(run_path), "default": default}
            audit.record(session, "write", "model", f"{name}:{version}", user, detail=detail)
            return CardedModel(_model_record(entry), card, default)
    except IntegrityError:
        raise DuplicateError(
            f"model {name!r} version {version!r} is already registered; register this run under a new "
            "--version."
        ) from None


def _carded(session: Any, rows: list[ModelEntry]) -> list[CardedModel]:
    ids = [row.id for row in rows]
    cards = {
        c.model_id: c for c in session.scalars(select(ModelCardRow).where(ModelCardRow.model_id.in_(ids)))
    }
    return [
        CardedModel(
            _model_record(row),
            dict(cards[row.id].card) if row.id in cards else {},
            bool(cards[row.id].is_default) if row.id in cards else False,
        )
        for row in rows
    ]


def list_carded(store: Store, name: str | None = None) -> list[CardedModel]:
    """Every registered version (oldest first within a name), with its card."""
    stmt = select(ModelEntry).order_by(ModelEntry.name, ModelEntry.created_at, ModelEntry.id)
    if name is not None:
        stmt = stmt.where(ModelEntry.name == name)
    with store.session() as session:
        return _carded(session, list(session.scalars(stmt)))


def no_model_yet() -> NotFoundError:
    return NotFoundError(
        "no model is registered yet: `medsight models register RUN --name NAME` registers one."
    )


NEWEST_FIRST = (ModelEntry.created_at.desc(), ModelEntry.id.desc())


def _default_first(stmt: Any) -> Any:
    """Order ``stmt`` (over ModelEntry) so the version marked default comes first, then the newest."""
    marked_first = case((ModelCardRow.is_default.is_(True), 0), else_=1)
    return stmt.outerjoin(ModelCardRow, ModelCardRow.model_id == ModelEntry.id).order_by(marked_first)


def _default_entry(session: Any) -> ModelEntry:
    entry = session.scalars(_default_first(select(ModelEntry)).order_by(*NEWEST_FIRST).limit(1)).first()
    if entry is None:
        raise no_model_yet()
    return entry


def default_model(store: Store) -> CardedModel:
    """The version marked default, else the most recently registered one."""
    with store.session() as session:
        return _carded(session, [_default_entry(session)])[0]


@dataclass(frozen=True)
class ServingKey:
    name: str
    version: str
    run_path: str


def serving_key(store: Store, spec: str | None) -> ServingKey:
    """Which model ``spec`` names (``resolve_model``'s rules), in one query of three columns: serving
    asks on every request, and neither the card nor the metrics are needed for it."""
    name, _, version = (spec or "").strip().partition(":")
    stmt = select(ModelEntry.name, ModelEntry.version, ModelEntry.run_path)
    if not name:  # the version marked default, else the newest
        stmt = _default_first(stmt)
    else:
        stmt = stmt.where(ModelEntry.name == name)
        if version:
            stmt = stmt.where(ModelEntry.version == version)
    with store.session() as session:
        row = session.execute(stmt.order_by(*NEWEST_FIRST).limit(1)).first()
    if row is None:
        raise model_not_found(name, version) if name else no_model_yet()
    return ServingKey(*row)


def resolve_model(store: Store, spec: str | None) -> CardedModel:
    """``None`` -> the default model; ``NAME`` -> its newest version; ``NAME:VERSION`` -> that version."""
    if spec is None or not spec.strip():
        return default_model(store)
    name, _, version = spec.strip().partition(":")
    record = store.get_model(name, version or None)  # NotFoundError names what was asked for
    (found,) = [m for m in list_carded(store, record.name) if m.model.version == record.version]
    return found
