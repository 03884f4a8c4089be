"""``medsight store check``: does every instance row have a good blob, and every blob a row?

Finds instance rows whose blob is missing or fails decryption / its hash (``missing``,
``corrupt``: data loss to restore from a backup — never touched by repair), blobs no row
references (``orphans``: what an interrupted ingest leaves), and temp files of interrupted writes.
``repair=True`` deletes orphans and temp files and nothing else.

Orphans are only a safe thing to delete when no ingest is running: a blob is written just before
its rows commit, so during an ingest a fresh blob looks orphaned for a moment. ``min_age_seconds``
spares blobs and temp files younger than that, for repairs on a live store.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from medsight.errors import MedsightError
from medsight.store.models import Instance

if TYPE_CHECKING:
    from medsight.store.store import Store


@dataclass
class CheckReport:
    instances_checked: int = 0
    blobs_on_disk: int = 0
    missing: list[tuple[str, str]] = field(default_factory=list)  # (sop_uid, sha)
    corrupt: list[tuple[str, str, str]] = field(default_factory=list)  # (sop_uid, sha, reason)
    orphans: list[str] = field(default_factory=list)
    temp_files: list[Path] = field(default_factory=list)
    removed_orphans: list[str] = field(default_factory=list)
    removed_temp_files: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No lost or damaged data, and no orphan left behind (temp files alone are harmless)."""
        return not self.missing and not self.corrupt and set(self.orphans) <= set(self.removed_orphans)

    def summary(self) -> str:
        lines = [
            f"{self.instances_checked} instance rows, {self.blobs_on_disk} blobs on disk",
            f"missing blobs: {len(self.missing)}",
            f"corrupt blobs: {len(self.corrupt)}",
            f"orphan blobs: {len(self.orphans)} ({len(self.removed_orphans)} removed)",
            f"temp files of interrupted writes: {len(self.temp_files)} ({len(self.removed_temp_files)} removed)",
        ]
        lines += [f"  missing: {sha} (instance {sop})" for sop, sha in self.missing]
        lines += [f"  corrupt: {sha} (instance {sop}): {reason}" for sop, sha, reason in self.corrupt]
        lines += [f"  orphan: {sha}" for sha in self.orphans if sha not in self.removed_orphans]
        lines.append("store is consistent" if self.ok else "store has problems (see above)")
        return "\n".join(lines)


def _old_enough(path: Path, min_age_seconds: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime >= min_age_seconds
    except FileNotFoundError:
        return False


def _check_rows(store: Store, report: CheckReport, verify: bool) -> set[str]:
    """Check each row's blob (each distinct blob once); returns the set of referenced hashes."""
    verdicts: dict[str, str | None] = {}  # sha -> None if good, else why not
    with store.session() as session:
        rows = session.execute(select(Instance.sop_instance_uid, Instance.blob_sha256).order_by(Instance.id))
        for sop_uid, sha in rows:
            report.instances_checked += 1
            if sha not in verdicts:
                verdicts[sha] = _verdict(store, sha, verify)
            if verdicts[sha] == "missing":
                report.missing.append((sop_uid, sha))
            elif verdicts[sha] is not None:
                report.corrupt.append((sop_uid, sha, verdicts[sha] or ""))
    return set(verdicts)


def _verdict(store: Store, sha: str, verify: bool) -> str | None:
    if not store.blobs.exists(sha):
        return "missing"
    if not verify:
        return None
    try:
        store.blobs.get(sha)
    except MedsightError as err:
        return str(err)
    return None


def _still_orphan(store: Store, sha: str) -> bool:
    with store.session() as session:
        return session.scalar(select(func.count()).where(Instance.blob_sha256 == sha)) == 0


def check_store(
    store: Store, repair: bool = False, *, verify: bool = True, min_age_seconds: float = 0.0
) -> CheckReport:
    """Compare rows and blobs; with ``repair``, remove orphan blobs and stale temp files (only those).

    ``verify=False`` checks that blobs exist without decrypting them (fast, for a quick look).
    """
    report = CheckReport()
    referenced = _check_rows(store, report, verify)
    for sha in store.blobs.iter_shas():
        report.blobs_on_disk += 1
        if sha not in referenced:
            report.orphans.append(sha)
    report.temp_files = list(store.blobs.iter_temp_files())
    if not repair:
        return report
    for sha in report.orphans:
        # Re-ask the database right before deleting: a row may have committed since the scan.
        if _old_enough(store.blobs.path(sha), min_age_seconds) and _still_orphan(store, sha):
            store.blobs.delete(sha)
            report.removed_orphans.append(sha)
    for temp in report.temp_files:
        if _old_enough(temp, min_age_seconds):
            temp.unlink(missing_ok=True)
            report.removed_temp_files.append(temp)
    return report
