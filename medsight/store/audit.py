"""The audit log: who did what to which resource, when, from where, and how it ended.

An event names resources by their de-identified ids (pseudonyms, replaced UIDs, blob hashes) and
users by name. ``detail`` is for small facts such as a count, a reason or a hash — never a patient's
name, an original UID or image data: the log is read by admins who are not cleared to see PHI.
When a session is passed, the event commits (or rolls back) with the change it describes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from medsight.store.models import AuditEvent, utcnow

if TYPE_CHECKING:
    from medsight.store.store import Store

# The common vocabulary; other short verbs are allowed where none of these fits.
ACTIONS = ("read", "write", "export", "delete", "login", "login_failed", "clear_flag", "predict", "train")
OUTCOMES = ("ok", "denied", "failed", "duplicate")


class _Named(Protocol):
    name: str


@dataclass(frozen=True)
class AuditRecord:
    time: dt.datetime
    user: str | None
    action: str
    resource_type: str
    resource_id: str | None
    client: str | None
    outcome: str
    detail: dict[str, Any] | None


def _user_name(user: _Named | str | None) -> str | None:
    return user if isinstance(user, str) or user is None else user.name


def record(
    target: Store | Session,
    action: str,
    resource_type: str,
    resource_id: str | None = None,
    user: _Named | str | None = None,
    client: str | None = None,
    outcome: str = "ok",
    detail: dict[str, Any] | None = None,
) -> None:
    """Write one audit event, in ``target``'s transaction if it is a session, else in its own."""
    event = AuditEvent(
        time=utcnow(),
        user_name=_user_name(user),
        action=action[:32],
        resource_type=resource_type[:32],
        resource_id=None if resource_id is None else str(resource_id)[:128],
        client=None if client is None else client[:64],
        outcome=outcome[:32],
        detail=detail,
    )
    if isinstance(target, Session):
        target.add(event)
        return
    with target.write() as session:
        session.add(event)


def query(
    store: Store,
    user: str | None = None,
    since: dt.datetime | None = None,
    action: str | None = None,
    limit: int = 1000,
) -> list[AuditRecord]:
    """Events newest first, optionally only one user's, one action's, or those at or after ``since``."""
    stmt = select(AuditEvent).order_by(AuditEvent.time.desc(), AuditEvent.id.desc()).limit(limit)
    if user is not None:
        stmt = stmt.where(AuditEvent.user_name == user)
    if action is not None:
        stmt = stmt.where(AuditEvent.action == action)
    if since is not None:
        stmt = stmt.where(AuditEvent.time >= since.astimezone(dt.timezone.utc))  # naive means local time
    with store.session() as session:
        return [
            AuditRecord(
                e.time, e.user_name, e.action, e.resource_type, e.resource_id, e.client, e.outcome, e.detail
            )
            for e in session.scalars(stmt)
        ]
