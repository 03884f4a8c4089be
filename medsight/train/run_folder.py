"""The run folder is the contract between steps (DESIGN.md).

``config.yaml`` (resolved config + versions), ``checkpoint.pt``, ``metrics.json``,
``report.html``, ``plots/`` and ``run.json`` (status: running, complete or failed, so a failed
run never looks complete). Writes are atomic: a reader sees the old file or the new one.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from medsight.errors import ConfigError, DataNotFoundError

STATUS_FILE = "run.json"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_torch_save(obj: Any, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def versions() -> dict[str, str]:
    import monai
    import numpy

    import medsight

    return {
        "medsight": medsight.__version__,
        "torch": str(torch.__version__),
        "monai": monai.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def set_status(run_dir: Path, status: str, **extra: Any) -> None:
    record = read_status(run_dir) if (run_dir / STATUS_FILE).exists() else {}
    record.update({"status": status, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra})
    if status != "failed":
        record.pop("error", None)
    atomic_write_text(run_dir / STATUS_FILE, json.dumps(record, indent=2))


def read_status(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / STATUS_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {"status": "unknown"}


def require_run(run_dir: Path, *files: str) -> Path:
    """The run folder, or an error saying what is missing and how to make it."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataNotFoundError(
            f"{run_dir}: no such run folder. Train one with `medsight train --out {run_dir}`."
        )
    for name in files:
        if not (run_dir / name).exists():
            raise DataNotFoundError(
                f"{run_dir}: no {name} (run status: {read_status(run_dir).get('status')}). "
                "Train it again, or `medsight train --resume` to finish it."
            )
    return run_dir


def refuse_existing_run(run_dir: Path) -> None:
    """A new run never overwrites an old one."""
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(
            f"{run_dir} already holds a run. Choose a new --out, or pass --resume to continue it."
        )
