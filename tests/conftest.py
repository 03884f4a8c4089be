"""Shared test setup: every test gets its own MEDSIGHT_HOME; MEDSIGHT_DATA points at ../shared/data.

The store: the ``store`` fixture (and ``db_url``, the URL it opens) is SQLite in the test's
MEDSIGHT_HOME. A test marked ``@both_backends`` runs twice, on SQLite and on PostgreSQL at
127.0.0.1:5432 (database ``test``), where it gets its own schema (``medsight_test_<random>_<n>``,
reached through ``search_path``, dropped afterwards) and MEDSIGHT_DB_URL points at it, so
``open_store()`` and the ``medsight`` subprocesses the test starts use it too. Without a PostgreSQL
server the PostgreSQL runs are skipped, saying so, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import getpass
import itertools
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

REPO_ROOT = Path(__file__).parents[1]
# Captured once, before any test changes the environment.
SHARED_DATA = Path(os.environ.get("MEDSIGHT_DATA") or REPO_ROOT.parent / "shared" / "data").resolve()

PG_HOST, PG_PORT, PG_DB = "127.0.0.1", 5432, "test"
BACKENDS = ("sqlite", "postgresql")
_schema_numbers = itertools.count()


def both_backends(test: Callable) -> Callable:
    """Run ``test`` once on SQLite and once on PostgreSQL (``db_url``; it need not take it itself)."""
    test = pytest.mark.usefixtures("db_url")(test)
    return pytest.mark.parametrize("db_url", BACKENDS, indirect=True)(test)


@pytest.fixture(autouse=True)
def medsight_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty MEDSIGHT_HOME per test; MEDSIGHT_DATA at the shared data folder. Returns the home."""
    home = tmp_path_factory.mktemp("medsight-home")
    monkeypatch.setenv("MEDSIGHT_HOME", str(home))
    monkeypatch.setenv("MEDSIGHT_DATA", str(SHARED_DATA))
    monkeypatch.delenv("MEDSIGHT_DB_URL", raising=False)  # SQLite in this home, unless db_url says
    return home


@pytest.fixture
def shared_data() -> Path:
    """The shared real-data folder (../shared/data or $MEDSIGHT_DATA); the test fails if it is missing."""
    if not SHARED_DATA.is_dir():
        pytest.fail(
            f"shared data folder {SHARED_DATA} is missing: put the data beside the repository "
            "(../shared/data, see DESIGN.md) or set MEDSIGHT_DATA to it.",
            pytrace=False,
        )
    return SHARED_DATA


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``python -m medsight.cli ARGS`` in a subprocess with the test's environment."""

    def run(
        *args: str | os.PathLike[str], timeout: float = 120, cwd: Path | None = None, **extra_env: str
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "COLUMNS": "250", **extra_env}  # wide: rich tables must not truncate cells
        return subprocess.run(
            [sys.executable, "-m", "medsight.cli", *map(str, args)],
            env=env,
            cwd=cwd or REPO_ROOT,
            text=True,
            capture_output=True,
            timeout=timeout,
        )

    return run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny trained run (synthetic data) per test module that asks for it."""
    from predict_helpers import tiny_run

    return tiny_run(tmp_path_factory)


@pytest.fixture(scope="session")
def pg_base_url() -> str:
    """A SQLAlchemy URL for the test database, as the first user that the server lets in."""
    errors = []
    for user in dict.fromkeys([getpass.getuser(), "postgres"]):
        try:
            psycopg.connect(host=PG_HOST, port=PG_PORT, dbname=PG_DB, user=user, connect_timeout=3).close()
            return f"postgresql+psycopg://{user}@{PG_HOST}:{PG_PORT}/{PG_DB}"
        except psycopg.Error as err:
            errors.append(f"as {user}: {' '.join(str(err).split())}")
    message = f"PostgreSQL not reachable at {PG_HOST}:{PG_PORT} (database {PG_DB}): {'; '.join(errors)}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " — CI must run the PostgreSQL tests.", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_schema_prefix(pg_base_url: str) -> Iterator[str]:
    prefix = f"medsight_test_{secrets.token_hex(4)}"
    yield prefix
    with pg_admin(pg_base_url) as conn:  # whatever a failed test did not drop
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (prefix + "%",)
        ).fetchall()
        for (schema,) in rows:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def pg_admin(base_url: str) -> psycopg.Connection:
    return psycopg.connect(base_url.replace("postgresql+psycopg", "postgresql"), autocommit=True)


@pytest.fixture
def db_url(
    request: pytest.FixtureRequest, medsight_env: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The test's database: SQLite in MEDSIGHT_HOME, or (``@both_backends``) a fresh PostgreSQL schema."""
    if getattr(request, "param", "sqlite") == "sqlite":
        yield f"sqlite+pysqlite:///{medsight_env / 'medsight.db'}"  # what open_store() opens by default
        return
    base = request.getfixturevalue("pg_base_url")
    schema = f"{request.getfixturevalue('pg_schema_prefix')}_{next(_schema_numbers)}"
    with pg_admin(base) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = f"{base}?options=-csearch_path%3D{schema}"
    monkeypatch.setenv("MEDSIGHT_DB_URL", url)
    yield url
    with pg_admin(base) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def store(db_url: str):  # noqa: ANN201
    """The test's store, opened on ``db_url``."""
    from medsight.store import open_store

    with open_store(db_url) as opened:
        yield opened
