"""Where the store's database is, how to connect to it, and bringing its schema up to date.

``MEDSIGHT_DB_URL`` picks the database, e.g. ``postgresql+psycopg://user@host:5432/medsight``
(add ``?options=-csearch_path%3Dmyschema`` to use a schema other than ``public``). Without it,
a SQLite file ``$MEDSIGHT_HOME/medsight.db`` in WAL mode is used: readers never block the writer,
which suits one machine with an ingest, a receiver and a web app side by side.

The schema belongs to Alembic (``medsight/store/migrations``): every open upgrades it to the
newest revision, so a new medsight version migrates an old database by itself.
"""

from __future__ import annotations

import os
from importlib import resources
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from medsight.errors import ConfigError
from medsight.paths import medsight_home

DB_URL_ENV = "MEDSIGHT_DB_URL"
# Any constant works; it only has to be the same for every medsight process sharing a database.
_PG_MIGRATION_LOCK = 0x6D656473


def database_url(url: str | None = None) -> str:
    """The URL to use: the argument, else ``MEDSIGHT_DB_URL``, else the SQLite file in MEDSIGHT_HOME."""
    if url:
        return url
    if os.environ.get(DB_URL_ENV):
        return os.environ[DB_URL_ENV]
    return f"sqlite+pysqlite:///{medsight_home() / 'medsight.db'}"


def create_store_engine(url: str | None = None) -> Engine:
    url = database_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError as err:
        raise ConfigError(f"{DB_URL_ENV}: {url!r} is not a database URL ({err}).") from None
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, connect_args={"timeout": 30})
        _configure_sqlite(engine)
        return engine
    if parsed.get_backend_name() != "postgresql":
        raise ConfigError(
            f"{DB_URL_ENV}: medsight supports SQLite and PostgreSQL, not {parsed.get_backend_name()}."
        )
    return create_engine(parsed, pool_pre_ping=True)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (below): the driver's own implicit transactions break SAVEPOINT.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: no fsync per commit (0.8 ms each here, several per prediction); the database
        # stays consistent on any crash, and only a power cut can lose the last commits.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")  # off by default in SQLite; ON DELETE CASCADE needs it
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # Writers take the write lock up front: a deferred read-then-write transaction could otherwise
        # fail with SQLITE_BUSY when another process committed in between, and busy_timeout cannot help.
        immediate = connection.get_execution_options().get("sqlite_immediate", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def alembic_config() -> Config:
    """Alembic's config for the migrations shipped inside the package (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(resources.files("medsight.store") / "migrations"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the store ships at least one migration"
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade_schema(engine: Engine) -> None:
    """Bring the schema to the newest revision; several processes may call this at once."""
    if current_revision(engine) == head_revision():
        return
    config = alembic_config()
    with engine.connect().execution_options(sqlite_immediate=True) as connection, connection.begin():
        if connection.dialect.name == "postgresql":
            # Two processes opening a new database at once must not both create the tables.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
