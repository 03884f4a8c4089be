"""Shared test setup: every test gets its own MEDSIGHT_HOME; MEDSIGHT_DATA points at ../shared/data."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).parents[1]
# Captured once, before any test changes the environment.
SHARED_DATA = Path(os.environ.get("MEDSIGHT_DATA") or REPO_ROOT.parent / "shared" / "data").resolve()


@pytest.fixture(autouse=True)
def medsight_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty MEDSIGHT_HOME per test; MEDSIGHT_DATA at the shared data folder. Returns the home."""
    home = tmp_path_factory.mktemp("medsight-home")
    monkeypatch.setenv("MEDSIGHT_HOME", str(home))
    monkeypatch.setenv("MEDSIGHT_DATA", str(SHARED_DATA))
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


@pytest.fixture
def store():  # noqa: ANN201
    """The test's store (SQLite in its MEDSIGHT_HOME)."""
    from medsight.store import open_store

    with open_store() as opened:
        yield opened
