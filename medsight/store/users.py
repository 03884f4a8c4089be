"""Users, roles, what each role may do, and passwords (API tokens: ``medsight.store.tokens``).

Passwords are kept only as argon2id hashes; a login, successful or not, writes an audit event.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from medsight.errors import BadInputError
from medsight.store import audit
from medsight.store.errors import AuthenticationError, DuplicateError, NotFoundError, PermissionDeniedError
from medsight.store.models import UserAccount

if TYPE_CHECKING:
    from medsight.store.store import Store

MIN_PASSWORD_LENGTH = 8
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class Role(str, Enum):
    ADMIN = "admin"  # users, settings, flagged instances; everything else too
    CLINICIAN = "clinician"  # uploads studies, asks for predictions, views studies
    RESEARCHER = "researcher"  # de-identified data sets, training, export
    VIEWER = "viewer"  # reads results only


_ALL = frozenset(role.value for role in Role)
# Which roles may do what. Every HTTP route and CLI command that touches data names one of these.
PERMISSIONS: dict[str, frozenset[str]] = {
    "users:manage": frozenset({"admin"}),
    "settings:manage": frozenset({"admin"}),
    "instances:clear-flag": frozenset({"admin"}),
    "audit:read": frozenset({"admin"}),
    "studies:upload": frozenset({"admin", "clinician"}),
    "studies:read": frozenset({"admin", "clinician", "researcher"}),
    "predict": frozenset({"admin", "clinician"}),
    "datasets:export": frozenset({"admin", "researcher"}),
    "train": frozenset({"admin", "researcher"}),
    "models:manage": frozenset({"admin", "researcher"}),
    "models:read": _ALL,
    "results:read": _ALL,
    # Everyone's prediction results, not only one's own: admins, and viewers (a read-only role for results).
    "results:read-all": frozenset({"admin", "viewer"}),
    "tokens:own": _ALL,  # create, list and revoke one's own tokens
}


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    active: bool = True


def _user(account: UserAccount) -> User:
    return User(account.name, Role(account.role), account.active)


def allowed(role: Role | str, permission: str) -> bool:
    if permission not in PERMISSIONS:
        raise KeyError(f"unknown permission {permission!r}; known: {', '.join(PERMISSIONS)}")
    return Role(role).value in PERMISSIONS[permission]


def require(user: User, permission: str) -> None:
    """Raise PermissionDeniedError unless ``user`` is active and their role grants ``permission``."""
    if not user.active:
        raise PermissionDeniedError(f"user {user.name!r} is disabled; ask an admin to enable the account.")
    if not allowed(user.role, permission):
        roles = ", ".join(sorted(PERMISSIONS[permission]))
        raise PermissionDeniedError(
            f"user {user.name!r} (role {user.role.value}) may not {permission}; roles allowed: {roles}."
        )


_hasher = PasswordHasher()  # argon2id with the library's current recommended cost
_dummy_hash: str | None = None


def _verify(password_hash: str | None, password: str) -> bool:
    """Check a password; for an unknown user check a dummy hash, so both take about as long."""
    global _dummy_hash
    if password_hash is None:
        _dummy_hash = _dummy_hash or _hasher.hash(secrets.token_hex(16))
        password_hash = _dummy_hash
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise BadInputError(
            f"a password needs at least {MIN_PASSWORD_LENGTH} characters; choose a longer one."
        )


def _role(role: Role | str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise BadInputError(
            f"unknown role {role!r}; choose one of: {', '.join(r.value for r in Role)}."
        ) from None


def _account(session: Session, name: str) -> UserAccount:
    account = session.scalars(select(UserAccount).where(UserAccount.name == name)).one_or_none()
    if account is None:
        raise NotFoundError(f"no user named {name!r}; `medsight user add` creates one.")
    return account


def add_user(store: Store, name: str, role: Role | str, password: str, *, by: str | None = None) -> User:
    """Create a user; the password is hashed with argon2 and never stored or logged itself."""
    if not _NAME_RE.match(name):
        raise BadInputError(
            f"user name {name!r} is not valid: 1-64 letters, digits, '.', '_', '@' or '-', starting alphanumeric."
        )
    role = _role(role)
    _check_password(password)
    try:
        with store.write() as session:
            session.add(UserAccount(name=name, role=role.value, password_hash=_hasher.hash(password)))
            audit.record(
                session, "write", "user", name, user=by, detail={"change": "created", "role": role.value}
            )
    except IntegrityError:
        raise DuplicateError(f"a user named {name!r} already exists.") from None
    return User(name, role)


def get_user(store: Store, name: str) -> User:
    with store.session() as session:
        return _user(_account(session, name))


def list_users(store: Store) -> list[User]:
    with store.session() as session:
        return [_user(a) for a in session.scalars(select(UserAccount).order_by(UserAccount.name))]


def update_user(
    store: Store,
    name: str,
    *,
    role: Role | str | None = None,
    active: bool | None = None,
    password: str | None = None,
    by: str | None = None,
) -> User:
    """Change a user's role, enable/disable them, or set a new password."""
    if password is not None:
        _check_password(password)
    with store.write() as session:
        account = _account(session, name)
        changes: dict[str, object] = {}
        if role is not None:
            account.role = changes["role"] = _role(role).value
        if active is not None:
            account.active = changes["active"] = active
        if password is not None:
            account.password_hash = _hasher.hash(password)
            changes["password"] = "changed"
        audit.record(session, "write", "user", name, user=by, detail=changes)
        return _user(account)


def authenticate(store: Store, name: str, password: str, client: str | None = None) -> User:
    """The user if ``password`` is theirs; AuthenticationError otherwise. Both outcomes are audited."""
    with store.session() as session:
        account = session.scalars(select(UserAccount).where(UserAccount.name == name)).one_or_none()
        password_hash = account.password_hash if account else None
        user = _user(account) if account else None
    # Hash outside any transaction: argon2 is slow on purpose, and must not hold a database lock.
    ok = _verify(password_hash, password)
    reason = "ok" if ok and user and user.active else "disabled" if ok else "bad credentials"
    with store.write() as session:
        if ok and _hasher.check_needs_rehash(password_hash or ""):
            _account(session, name).password_hash = _hasher.hash(password)  # parameters got stronger
        audit.record(
            session,
            "login" if reason == "ok" else "login_failed",
            "user",
            name[:128],  # the name tried, even when unknown: repeated failures are what an admin looks for
            user=name if user else None,
            client=client,
            outcome="ok" if reason == "ok" else "denied",
            detail={"method": "password", "reason": reason},
        )
    if reason == "disabled":
        raise AuthenticationError(f"user {name!r} is disabled; ask an admin to enable the account.")
    if user is None or reason != "ok":
        raise AuthenticationError(
            "wrong user name or password."
        )  # the same words either way: no user probing
    return user
