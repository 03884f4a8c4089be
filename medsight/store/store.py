"""The store: an index of studies/series/instances in SQL beside encrypted blobs on disk.

Adding instances (and why blob and rows commit together or not at all) is in ``writer.py``;
finding them in ``queries.py``; the models registry and labels in ``registry.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from medsight.store import audit
from medsight.store.blobs import BlobStore
from medsight.store.db import create_store_engine, upgrade_schema
from medsight.store.errors import NotFoundError, PermissionDeniedError
from medsight.store.models import Instance, utcnow
from medsight.store.queries import QueryMixin, instance_record
from medsight.store.records import InstanceRecord
from medsight.store.registry import RegistryMixin
from medsight.store.users import User, require
from medsight.store.writer import InstanceWriterMixin

Actor = User | str | None


class Store(InstanceWriterMixin, QueryMixin, RegistryMixin):
    """One medsight store: a database (``engine``) and a blob folder (``blobs``)."""

    def __init__(self, engine: Engine, blobs: BlobStore) -> None:
        self.engine = engine
        self.blobs = blobs
        self.sessions = sessionmaker(engine, expire_on_commit=False)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session for reading (SQLite: a deferred transaction that never blocks writers)."""
        with self.sessions() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on any exception."""
        with self.sessions.begin() as session:
            # On SQLite take the write lock at BEGIN (see db._configure_sqlite); PostgreSQL ignores this.
            session.connection(execution_options={"sqlite_immediate": True})
            yield session

    # -- instances ---------------------------------------------------------------------------

    def get_instance_bytes(self, sop_uid: str, *, user: Actor = None, client: str | None = None) -> bytes:
        """The stored (de-identified) file, decrypted and verified; the read is audited."""
        sha = self.instance_shas([sop_uid]).get(sop_uid)
        if sha is None:
            raise NotFoundError(f"no instance with SOP Instance UID {sop_uid} in the store.")
        data = self.blobs.get(sha)
        audit.record(self, "read", "instance", sop_uid, user, client)
        return data

    def get_instance(self, sop_uid: str) -> InstanceRecord:
        with self.session() as session:
            row = session.scalars(select(Instance).where(Instance.sop_instance_uid == sop_uid)).one_or_none()
            if row is None:
                raise NotFoundError(f"no instance with SOP Instance UID {sop_uid} in the store.")
            return instance_record(row)

    def clear_flag(self, sop_uid: str, admin: User, client: str | None = None) -> InstanceRecord:
        """An admin's decision that a flagged instance may be used for training and export."""
        try:
            require(admin, "instances:clear-flag")
        except PermissionDeniedError:
            audit.record(self, "clear_flag", "instance", sop_uid, admin, client, outcome="denied")
            raise
        with self.write() as session:
            row = session.scalars(select(Instance).where(Instance.sop_instance_uid == sop_uid)).one_or_none()
            if row is None:
                raise NotFoundError(f"no instance with SOP Instance UID {sop_uid} in the store.")
            if row.cleared_at is None:
                row.cleared_by, row.cleared_at = admin.name, utcnow()
            audit.record(
                session, "clear_flag", "instance", sop_uid, admin, client, detail={"flags": row.flags}
            )
            return instance_record(row)


def open_store(
    url: str | None = None, *, blob_root: Path | None = None, blob_key: bytes | None = None
) -> Store:
    """Open (and create or migrate) the store: ``url`` or ``MEDSIGHT_DB_URL`` or the SQLite file in MEDSIGHT_HOME.

    Blobs default to ``$MEDSIGHT_HOME/blobs`` with the key from ``MEDSIGHT_BLOB_KEY`` or the key file.
    """
    engine = create_store_engine(url)
    upgrade_schema(engine)
    return Store(engine, BlobStore(blob_root, blob_key))
