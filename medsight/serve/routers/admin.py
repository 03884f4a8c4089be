"""Admin pages' API: users, instances flagged for burned-in text, and the audit log."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Query

from medsight.serve.deps import ClientDep, StoreDep, requires
from medsight.serve.schemas import AuditEventOut, ErrorResponse, InstanceOut, UserCreate, UserOut, UserUpdate
from medsight.store import InstanceRecord, User, add_user, audit
from medsight.store.users import list_users, update_user

router = APIRouter(prefix="/api/admin", tags=["admin"])
UserAdmin = Annotated[User, requires("users:manage")]
FlagAdmin = Annotated[User, requires("instances:clear-flag")]
AuditReader = Annotated[User, requires("audit:read")]
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409)
}


def _user_out(user: User) -> UserOut:
    return UserOut(name=user.name, role=user.role, active=user.active)


def _instance_out(record: InstanceRecord) -> InstanceOut:
    return InstanceOut(
        sop_instance_uid=record.sop_uid,
        series_instance_uid=record.series_uid,
        study_instance_uid=record.study_uid,
        sop_class_uid=record.sop_class_uid,
        flags=record.flags,
        burned_in_text_risk=record.burned_in_text_risk,
        excluded=record.excluded,
        cleared_by=record.cleared_by,
        cleared_at=record.cleared_at,
        created_at=record.created_at,
    )


@router.get("/users", responses=_ERRORS)
def get_users(store: StoreDep, admin: UserAdmin) -> list[UserOut]:
    """Every user with their role and whether they may log in (never a password or its hash)."""
    return [_user_out(user) for user in list_users(store)]


@router.post("/users", status_code=201, responses=_ERRORS)
def post_user(body: UserCreate, store: StoreDep, admin: UserAdmin) -> UserOut:
    """Create a user (the password is hashed with argon2; it is never stored or logged)."""
    return _user_out(add_user(store, body.name, body.role, body.password, by=admin.name))


@router.patch("/users/{name}", responses=_ERRORS)
def patch_user(name: str, body: UserUpdate, store: StoreDep, admin: UserAdmin) -> UserOut:
    """Change a user's role, enable or disable them, or set a new password."""
    user = update_user(store, name, role=body.role, active=body.active, password=body.password, by=admin.name)
    return _user_out(user)


@router.get("/instances/flagged", responses=_ERRORS)
def get_flagged(store: StoreDep, admin: FlagAdmin, client: ClientDep) -> list[InstanceOut]:
    """Instances kept out of training and export until an admin clears them."""
    records = store.flagged_instances()
    audit.record(store, "read", "flagged_instances", None, admin, client, detail={"count": len(records)})
    return [_instance_out(record) for record in records]


@router.post("/instances/{sop_instance_uid}/clear-flag", responses=_ERRORS)
def clear_flag(sop_instance_uid: str, store: StoreDep, admin: FlagAdmin, client: ClientDep) -> InstanceOut:
    """An admin has looked at the pixels: the instance may be used for training and export."""
    return _instance_out(store.clear_flag(sop_instance_uid, admin, client))


@router.get("/audit", responses=_ERRORS)
def get_audit(
    store: StoreDep,
    admin: AuditReader,
    client: ClientDep,
    user: Annotated[str | None, Query(max_length=64, description="only this user's events")] = None,
    since: Annotated[dt.datetime | None, Query(description="only events at or after (ISO 8601)")] = None,
    action: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
) -> list[AuditEventOut]:
    """Audit events, newest first. Reading the log is itself audited."""
    events = audit.query(store, user=user, since=since, action=action, limit=limit)
    audit.record(store, "read", "audit", None, admin, client, detail={"count": len(events)})
    return [AuditEventOut.model_validate(e) for e in events]
