"""Prediction results: one row per prediction, readable by its owner (and by roles that read everyone's).

A result names its source by de-identified UIDs (a DICOM that was ingested, or a stored instance) or,
for a picture that was not stored, by ``upload_id`` (the first 32 hex digits of its SHA-256). The
heatmap and overlay PNGs show the patient's image, so they are kept encrypted under the blob key
(AES-256-GCM, the plaintext's SHA-256 as associated data) exactly as the blobs are.

A result is of one ``task``: a classification (label, probabilities, heatmap and overlay), a
segmentation (the structure's name as its label, the mask's size in ``details``; probability map,
overlay and mask images) or an ECG record's beats (counts and beats in ``details``; a strip plot).
Images other than the heatmap and overlay are kept, sealed the same way, in ``result_images``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import JSON, Float, ForeignKey, LargeBinary, String, func, select
from sqlalchemy.orm import Mapped, mapped_column

from medsight.store import audit
from medsight.store.errors import BlobIntegrityError, NotFoundError
from medsight.store.models import Base, utcnow
from medsight.store.users import User, allowed

if TYPE_CHECKING:
    from medsight.store.store import Store

READ_ALL = "results:read-all"  # the permission that shows every user's results, not only one's own
UPLOAD_PREFIX = "upload-"  # the study id of a picture that was not stored as a study
ImageKind = Literal["heatmap", "overlay", "mask", "strip"]
COLUMN_IMAGES = ("heatmap", "overlay")  # kept in the results row itself


class ResultRow(Base):
    __tablename__ = "results"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_name: Mapped[str | None] = mapped_column(String(64), index=True)
    model_name: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(128))
    classes: Mapped[list[str]]
    probabilities: Mapped[list[float]] = mapped_column(JSON)
    threshold: Mapped[float | None] = mapped_column(Float)
    study_instance_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    sop_instance_uid: Mapped[str | None] = mapped_column(String(64))
    upload_id: Mapped[str | None] = mapped_column(String(64), index=True)
    source_format: Mapped[str] = mapped_column(String(16))
    explain_method: Mapped[str] = mapped_column(String(16))
    sr_sop_instance_uid: Mapped[str | None] = mapped_column(String(64))
    sc_sop_instance_uid: Mapped[str | None] = mapped_column(String(64))
    timing: Mapped[dict[str, Any]]
    heatmap_png: Mapped[bytes | None] = mapped_column(LargeBinary)
    overlay_png: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    task: Mapped[str] = mapped_column(String(16), default="classification", server_default="classification")
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    image_kinds: Mapped[list[str] | None] = mapped_column(JSON)  # None: a classification's two


class ResultImageRow(Base):
    """An image of a result other than its heatmap and overlay (a mask, an ECG strip), sealed."""

    __tablename__ = "result_images"
    result_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("results.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    png: Mapped[bytes] = mapped_column(LargeBinary)


@dataclass(frozen=True)
class NewResult:
    """What a prediction hands to the store."""

    model_name: str
    model_version: str
    label: str
    classes: list[str]
    probabilities: list[float]
    threshold: float | None
    source_format: str
    explain_method: str
    heatmap_png: bytes | None
    overlay_png: bytes | None
    timing: dict[str, float] = field(default_factory=dict)
    study_uid: str | None = None
    sop_uid: str | None = None
    upload_id: str | None = None
    sr_sop_uid: str | None = None
    sc_sop_uid: str | None = None
    task: str = "classification"
    details: dict[str, Any] | None = None  # what the task says besides a label (mask size, beats)
    images: dict[str, bytes] = field(default_factory=dict)  # other kinds than heatmap and overlay

    @property
    def image_kinds(self) -> list[str]:
        given = {"heatmap": self.heatmap_png, "overlay": self.overlay_png}
        return [k for k, v in given.items() if v is not None] + list(self.images)


@dataclass(frozen=True)
class ResultRecord:
    id: str
    user: str | None
    model_name: str
    model_version: str
    label: str
    classes: list[str]
    probabilities: list[float]
    threshold: float | None
    study_uid: str | None
    sop_uid: str | None
    upload_id: str | None
    source_format: str
    explain_method: str
    sr_sop_uid: str | None
    sc_sop_uid: str | None
    timing: dict[str, float]
    created_at: dt.datetime
    task: str = "classification"
    details: dict[str, Any] | None = None
    image_kinds: tuple[str, ...] = COLUMN_IMAGES

    @property
    def study_id(self) -> str:
        """The study it belongs to: a de-identified Study Instance UID, or ``upload-<id>`` for a picture."""
        return self.study_uid or f"{UPLOAD_PREFIX}{self.upload_id}"


def _record(row: ResultRow) -> ResultRecord:
    return ResultRecord(
        row.id,
        row.user_name,
        row.model_name,
        row.model_version,
        row.label,
        list(row.classes),
        [float(p) for p in row.probabilities],
        row.threshold,
        row.study_instance_uid,
        row.sop_instance_uid,
        row.upload_id,
        row.source_format,
        row.explain_method,
        row.sr_sop_instance_uid,
        row.sc_sop_instance_uid,
        dict(row.timing or {}),
        row.created_at,
        row.task or "classification",
        dict(row.details) if row.details is not None else None,
        tuple(row.image_kinds) if row.image_kinds is not None else COLUMN_IMAGES,
    )


def _seal(store: Store, data: bytes) -> bytes:
    sha = hashlib.sha256(data).hexdigest()
    return bytes.fromhex(sha) + store.blobs._encrypt(sha, data)  # same sealing as a blob on disk


def _open(store: Store, sealed: bytes) -> bytes:
    sha = sealed[:32].hex()
    data = store.blobs._decrypt(sha, sealed[32:])
    if hashlib.sha256(data).hexdigest() != sha:
        raise BlobIntegrityError("a result image decrypted but does not match its SHA-256.")
    return data


def sees_all(user: User) -> bool:
    return user.active and allowed(user.role, READ_ALL)


def add_result(
    store: Store, new: NewResult, user: User | str | None, client: str | None = None
) -> ResultRecord:
    """Store one prediction and its audit event in one transaction (both or neither)."""
    with store.write() as session:
        row = ResultRow(
            id=secrets.token_hex(16),  # random, so that one user's result ids say nothing about another's
            user_name=user if isinstance(user, str) or user is None else user.name,
            model_name=new.model_name,
            model_version=new.model_version,
            label=new.label[:128],
            classes=list(new.classes),
            probabilities=[float(p) for p in new.probabilities],
            threshold=new.threshold,
            study_instance_uid=new.study_uid,
            sop_instance_uid=new.sop_uid,
            upload_id=new.upload_id,
            source_format=new.source_format,
            explain_method=new.explain_method,
            sr_sop_instance_uid=new.sr_sop_uid,
            sc_sop_instance_uid=new.sc_sop_uid,
            timing=dict(new.timing),
            heatmap_png=None if new.heatmap_png is None else _seal(store, new.heatmap_png),
            overlay_png=None if new.overlay_png is None else _seal(store, new.overlay_png),
            created_at=utcnow(),
            task=new.task,
            details=new.details,
            image_kinds=None if new.task == "classification" else new.image_kinds,
        )
        session.add(row)
        session.flush()  # the row before its images (their foreign key)
        session.add_all(
            ResultImageRow(result_id=row.id, kind=kind, png=_seal(store, data))
            for kind, data in new.images.items()
        )
        detail = {"model": f"{new.model_name}:{new.model_version}", "format": new.source_format}
        audit.record(session, "predict", "result", row.id, user, client, detail=detail)
        return _record(row)


def _visible_row(store: Store, result_id: str, user: User) -> ResultRow:
    with store.session() as session:
        row = session.get(ResultRow, result_id)
    # Someone else's result answers like a missing one: its existence is not the caller's business.
    if row is None or not (sees_all(user) or row.user_name == user.name):
        raise NotFoundError(f"no result {result_id} (among the results you may read).")
    return row


def get_result(store: Store, result_id: str, user: User, client: str | None = None) -> ResultRecord:
    """One result the user may read; the read is audited."""
    record = _record(_visible_row(store, result_id, user))
    audit.record(store, "read", "result", result_id, user, client)
    return record


def result_image(
    store: Store, result_id: str, kind: ImageKind, user: User, client: str | None = None
) -> bytes:
    """One of the result's PNGs (heatmap, overlay, mask, strip), decrypted; the read is audited."""
    row = _visible_row(store, result_id, user)
    if kind in COLUMN_IMAGES:
        sealed = row.heatmap_png if kind == "heatmap" else row.overlay_png
    else:
        with store.session() as session:
            image = session.get(ResultImageRow, (result_id, kind))
        sealed = None if image is None else image.png
    if sealed is None:
        raise NotFoundError(f"result {result_id} has no {kind} image (a {row.task} result).")
    data = _open(store, sealed)
    audit.record(store, "read", "result", result_id, user, client, detail={"image": kind})
    return data


def list_results(
    store: Store, user: User, *, study_id: str | None = None, limit: int = 1000
) -> list[ResultRecord]:
    """The user's results (everyone's for roles with ``results:read-all``), newest first."""
    stmt = select(ResultRow).order_by(ResultRow.created_at.desc(), ResultRow.id).limit(limit)
    if not sees_all(user):
        stmt = stmt.where(ResultRow.user_name == user.name)
    if study_id is not None and study_id.startswith(UPLOAD_PREFIX):
        stmt = stmt.where(ResultRow.upload_id == study_id.removeprefix(UPLOAD_PREFIX))
    elif study_id is not None:
        stmt = stmt.where(ResultRow.study_instance_uid == study_id)
    with store.session() as session:
        return [_record(row) for row in session.scalars(stmt)]


@dataclass
class StudyPage:
    records: list[ResultRecord]  # every visible result of the page's studies, newest first
    study_ids: list[str]  # the page's studies, the one with the newest result first
    total: int  # studies with results the user may read, over all pages


def _study_key():  # noqa: ANN202 - a SQL expression: the study id as ``ResultRecord.study_id`` spells it
    return func.coalesce(ResultRow.study_instance_uid, UPLOAD_PREFIX + ResultRow.upload_id)


def page_studies(store: Store, user: User, *, limit: int, offset: int = 0) -> StudyPage:
    """One page of the studies with results the user may read, newest result first, with all their results.

    Paged by study, not by result, so that a study is never split across two pages.
    """
    key = _study_key()
    latest = func.max(ResultRow.created_at)
    studies = select(key.label("study"), latest.label("latest")).group_by(key)
    visible = select(ResultRow).order_by(ResultRow.created_at.desc(), ResultRow.id)
    if not sees_all(user):
        studies = studies.where(ResultRow.user_name == user.name)
        visible = visible.where(ResultRow.user_name == user.name)
    with store.session() as session:
        total = session.scalar(select(func.count()).select_from(studies.subquery())) or 0
        page = studies.order_by(latest.desc(), key).limit(limit).offset(offset)
        ids = [row.study for row in session.execute(page)]
        records = [_record(row) for row in session.scalars(visible.where(key.in_(ids)))] if ids else []
    return StudyPage(records, ids, total)


def count_results(store: Store) -> int:
    with store.session() as session:
        return session.scalar(select(func.count()).select_from(ResultRow)) or 0
