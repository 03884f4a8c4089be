"""medsight's store: an SQL index of de-identified studies, users, tokens, audit and models, plus
encrypted content-addressed blobs. ``open_store()`` is the way in.
"""

from medsight.store.audit import AuditRecord
from medsight.store.blobs import BlobStore
from medsight.store.check import CheckReport, check_store
from medsight.store.errors import (
    AuthenticationError,
    BlobIntegrityError,
    BlobMissingError,
    DuplicateError,
    NotFoundError,
    PermissionDeniedError,
)
from medsight.store.records import (
    AddResult,
    InstanceMeta,
    InstanceRecord,
    ModelRecord,
    SeriesRecord,
    StudyRecord,
)
from medsight.store.store import Store, open_store
from medsight.store.tokens import TokenInfo, authenticate_token, create_token, list_tokens, revoke_token
from medsight.store.users import PERMISSIONS, Role, User, add_user, authenticate, require

__all__ = [
    "PERMISSIONS",
    "AddResult",
    "AuditRecord",
    "AuthenticationError",
    "BlobIntegrityError",
    "BlobMissingError",
    "BlobStore",
    "CheckReport",
    "DuplicateError",
    "InstanceMeta",
    "InstanceRecord",
    "ModelRecord",
    "NotFoundError",
    "PermissionDeniedError",
    "Role",
    "SeriesRecord",
    "Store",
    "StudyRecord",
    "TokenInfo",
    "User",
    "add_user",
    "authenticate",
    "authenticate_token",
    "check_store",
    "create_token",
    "list_tokens",
    "open_store",
    "require",
    "revoke_token",
]
