"""Errors the store raises; each message says what went wrong and what to do."""

from __future__ import annotations

from medsight.errors import BadInputError, DataNotFoundError, MedsightError


class BlobMissingError(DataNotFoundError):
    """An instance row points at a blob that is not on disk."""


class BlobIntegrityError(MedsightError):
    """A blob failed to decrypt or its content no longer matches its SHA-256."""


class PermissionDeniedError(MedsightError):
    """The user is known but their role does not allow the action (HTTP 403)."""


class AuthenticationError(MedsightError):
    """Who the caller is could not be established: bad password, unknown/expired/revoked token (HTTP 401)."""


class DuplicateError(BadInputError):
    """Something with this unique name already exists."""


class NotFoundError(DataNotFoundError):
    """A user, token, instance or model asked for by name or id does not exist."""
