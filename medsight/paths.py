"""The two places medsight knows about, never mixed.

``MEDSIGHT_HOME`` (default ``~/.medsight``) holds medsight's own state: the data set registry,
caches, later the database, blobs and keys. ``MEDSIGHT_DATA`` (default ``$MEDSIGHT_HOME/data``)
is where data set files are looked up; medsight treats it as read-only and never writes there.
"""

from __future__ import annotations

import os
from pathlib import Path


def medsight_home() -> Path:
    """medsight's own state folder, created on first use."""
    home = Path(os.environ.get("MEDSIGHT_HOME") or Path.home() / ".medsight").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def medsight_data() -> Path:
    """Where data set files are looked up (read-only; may not exist)."""
    configured = os.environ.get("MEDSIGHT_DATA")
    return Path(configured).expanduser() if configured else medsight_home() / "data"


def downloads_dir() -> Path:
    """Where ``medsight data pull`` puts files: inside MEDSIGHT_HOME, since MEDSIGHT_DATA is read-only."""
    folder = medsight_home() / "downloads"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def cache_dir() -> Path:
    folder = medsight_home() / "cache"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
