"""API tokens: created for a user, shown once, stored hashed, revocable, expiring.

A token is ``ms_`` + 32 random bytes (urlsafe base64) and is sent as ``Authorization: Bearer TOKEN``.
The store keeps only its SHA-256, so a copy of the database yields no working token. A fast hash
suffices: unlike a password, a token has 256 bits of entropy, so there is nothing to brute-force.
Error messages say why a token was refused but never repeat the token.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from medsight.errors import BadInputError
from medsight.store import audit
from medsight.store.errors import AuthenticationError, NotFoundError
from medsight.store.models import ApiToken, UserAccount, utcnow
from medsight.store.users import User, _account, _user

if TYPE_CHECKING:
    from medsight.store.store import Store

TOKEN_PREFIX = "ms_"
# last_used_at is a hint, not a log (the audit log is): writing it on every request would turn
# every read into a write, so it is refreshed at most this often.
_LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


@dataclass(frozen=True)
class TokenInfo:
    id: int
    user: str
    name: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None

    @property
    def status(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= utcnow():
            return "expired"
        return "active"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    store: Store,
    user_name: str,
    name: str | None = None,
    expires_in_days: float | None = 30,
    *,
    by: str | None = None,
    client: str | None = None,
) -> str:
    """A new token for ``user_name``; the plaintext is returned here and never again. None: no expiry."""
    if expires_in_days is not None and expires_in_days <= 0:
        raise BadInputError("a token's lifetime must be a positive number of days (or none, for no expiry).")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = utcnow() + dt.timedelta(days=expires_in_days) if expires_in_days is not None else None
    with store.write() as session:
        account = _account(session, user_name)
        row = ApiToken(user=account, token_hash=hash_token(token), name=(name or "")[:64], expires_at=expires)
        session.add(row)
        session.flush()
        audit.record(
            session,
            "write",
            "token",
            str(row.id),
            user=by or user_name,
            client=client,
            detail={"change": "created", "for": user_name, "name": row.name},
        )
    return token


def _token_row(session: Session, token_or_id: str | int) -> ApiToken:
    if isinstance(token_or_id, int):
        row = session.get(ApiToken, token_or_id)
    else:
        row = session.scalars(
            select(ApiToken).where(ApiToken.token_hash == hash_token(token_or_id))
        ).one_or_none()
    if row is None:
        raise NotFoundError("no such API token; `medsight token list` shows the ids.")
    return row


def revoke_token(
    store: Store, token_or_id: str | int, *, by: str | None = None, client: str | None = None
) -> None:
    """Revoke a token given by its id (from ``list_tokens``) or by its plaintext. Revoking twice is fine."""
    with store.write() as session:
        row = _token_row(session, token_or_id)
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        audit.record(
            session, "write", "token", str(row.id), user=by, client=client, detail={"change": "revoked"}
        )


def list_tokens(store: Store, user_name: str | None = None) -> list[TokenInfo]:
    """Tokens (never their hashes), oldest first; all users' unless ``user_name`` is given."""
    stmt = select(ApiToken, UserAccount.name).join(UserAccount).order_by(ApiToken.id)
    if user_name is not None:
        stmt = stmt.where(UserAccount.name == user_name)
    with store.session() as session:
        return [
            TokenInfo(t.id, owner, t.name, t.created_at, t.expires_at, t.revoked_at, t.last_used_at)
            for t, owner in session.execute(stmt)
        ]


def _refusal(row: ApiToken | None, now: dt.datetime) -> str | None:
    """Why a token is refused, in words safe to show (no token in them); None if it is good."""
    if row is None:
        return "unknown API token (mistyped, or its user was deleted)"
    label = f"API token {row.id}" + (f" ({row.name!r})" if row.name else "")
    if row.revoked_at is not None:
        return f"{label} was revoked on {row.revoked_at:%Y-%m-%d %H:%M} UTC"
    if row.expires_at is not None and row.expires_at <= now:
        return f"{label} expired on {row.expires_at:%Y-%m-%d %H:%M} UTC"
    if not row.user.active:
        return f"{label} belongs to disabled user {row.user.name!r}"
    return None


def authenticate_token(store: Store, token: str, client: str | None = None) -> User:
    """The user a bearer token belongs to; AuthenticationError saying why when it is refused."""
    if not token.startswith(TOKEN_PREFIX):
        raise AuthenticationError(f"not a medsight API token (they start with {TOKEN_PREFIX!r}).")
    now = utcnow()
    with store.session() as session:
        row = session.scalars(select(ApiToken).where(ApiToken.token_hash == hash_token(token))).one_or_none()
        reason = _refusal(row, now)
        user = _user(row.user) if row is not None and reason is None else None
        stale = row is not None and (
            row.last_used_at is None or now - row.last_used_at > _LAST_USED_RESOLUTION
        )
        token_id, owner = (None, None) if row is None else (row.id, row.user.name)
    if reason is not None:
        audit.record(
            store,
            "login_failed",
            "token",
            None if token_id is None else str(token_id),
            user=owner,
            client=client,
            outcome="denied",
            detail={"method": "token", "reason": reason},
        )
        raise AuthenticationError(reason + ".")
    if stale:
        with store.write() as session:
            session.get_one(ApiToken, token_id).last_used_at = now
    assert user is not None
    return user
