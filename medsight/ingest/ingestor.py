"""The ingest pipeline: read → check → de-identify → store, in batches, one outcome per instance.

Preparation (read, check, de-identify, serialise; see ``prepare``) runs in this process for small
inputs and in one worker process per core for many files (``parallel_min_files``); the store is
written from this process in both cases, and the outcomes are the same either way.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from pydicom import Dataset

from medsight.deid import Deidentifier
from medsight.errors import BadInputError
from medsight.ingest.convert import Candidate, check_dicom
from medsight.ingest.outcome import STATUSES, IngestOutcome, IngestReport
from medsight.ingest.prepare import (
    Item,
    Job,
    Limits,
    Prepared,
    Unit,
    candidates_of,
    default_workers,
    job_for,
    prepare_in_processes,
    prepare_unit,
)
from medsight.ingest.sources import Refused, Source, SourceLister, check_limits
from medsight.store import audit

if TYPE_CHECKING:
    from medsight.store.store import Store
    from medsight.store.users import User

log = logging.getLogger(__name__)
__all__ = ["STATUSES", "IngestOutcome", "IngestReport", "Ingestor"]
# Below this many files, starting worker processes (~0.1-0.3 s) costs more than it saves.
PARALLEL_MIN_FILES = 64
STORE_THREADS = 2  # batches being stored at once (see _BatchStorer)


class Ingestor:
    """Ingest files, bytes or datasets into ``store``, de-identified with ``profile``.

    ``patient_id`` names the patient of PNG/JPEG/NIfTI files (default: one new patient per file).
    A zip whose members declare more than ``max_archive_bytes`` in total is refused whole.
    ``workers`` processes (default: one per core; 1 = none) prepare files when there are at least
    ``parallel_min_files`` of them and the de-identifier records no linkage (a callback that cannot
    leave this process).
    """

    def __init__(
        self,
        store: Store,
        *,
        profile: str = "basic",
        max_file_bytes: int = 512 * 2**20,
        user: User | str | None = None,
        client: str | None = None,
        batch_size: int = 32,
        patient_id: str | None = None,
        max_archive_bytes: int = 16 * 2**30,
        deidentifier: Deidentifier | None = None,
        workers: int | None = None,
        parallel_min_files: int = PARALLEL_MIN_FILES,
    ) -> None:
        check_limits(max_file_bytes, max_archive_bytes)
        if batch_size < 1:
            raise BadInputError("the batch size must be at least 1.")
        self.store = store
        self.deid = deidentifier or Deidentifier(profile)
        self.max_file_bytes = max_file_bytes
        self.max_archive_bytes = max_archive_bytes
        self.user, self.client = user, client
        self.batch_size = batch_size
        self.patient_id = patient_id
        self.workers = default_workers() if workers is None else max(1, workers)
        self.parallel_min_files = parallel_min_files

    @property
    def limits(self) -> Limits:
        return Limits(self.max_file_bytes, self.patient_id)

    # -- the three doors ---------------------------------------------------------------------

    def ingest_bytes(
        self, items: list[tuple[str, bytes]], on_outcome: Callable[[IngestOutcome], None] | None = None
    ) -> IngestReport:
        """Files given as (name, content), e.g. the parts of a STOW-RS request."""
        if self._parallel(len(items)):
            return self._run(self._in_processes(Job(name, data=data) for name, data in items), on_outcome)
        units = ((name, self._from_bytes(data)) for name, data in items)
        return self._run(self._here(units), on_outcome)

    def ingest_datasets(
        self,
        items: list[tuple[str, Dataset]],
        on_outcome: Callable[[IngestOutcome], None] | None = None,
        *,
        client: str | None = None,
    ) -> IngestReport:
        """Datasets already parsed (C-STORE); each needs its ``file_meta`` with the Transfer Syntax UID."""
        units = ((name, (lambda ds=ds: [Candidate(check_dicom(ds))])) for name, ds in items)
        return self._run(self._here(units), on_outcome, client=client)

    def ingest_paths(
        self,
        paths: list[Path],
        progress: bool = True,
        on_outcome: Callable[[IngestOutcome], None] | None = None,
    ) -> IngestReport:
        """Files, folders (recursively; hidden files skipped) and .zip archives (read in memory)."""
        lister = SourceLister(self.max_file_bytes, self.max_archive_bytes)
        try:
            listed = list(lister.expand([Path(p) for p in paths]))
            if self._parallel(len(listed)):
                prepared = self._in_processes(job_for(item) for item in listed)
            else:
                prepared = self._here(self._unit(item) for item in listed)
            if not progress:
                return self._run(prepared, on_outcome)
            from medsight.progress import new_progress

            with new_progress() as bar:
                task = bar.add_task("ingesting", total=len(listed), status="")
                return self._run(_advancing(prepared, lambda: bar.advance(task)), on_outcome)
        finally:
            lister.close()

    # -- the pipeline --------------------------------------------------------------------------

    def _parallel(self, count: int) -> bool:
        return self.workers > 1 and count >= self.parallel_min_files and self.deid.linkage is None

    def _here(self, units: Iterable[Unit]) -> Iterator[list[Item]]:
        return (prepare_unit(self.deid, name, make) for name, make in units)

    def _in_processes(self, jobs: Iterable[Job]) -> Iterator[list[Item]]:
        return prepare_in_processes(jobs, self.deid, self.limits, self.workers)

    def _unit(self, item: Source | tuple[str, str]) -> Unit:
        if isinstance(item, tuple):
            name, reason = item
            return name, _refuse(reason)
        return item.name, lambda: self._from_bytes(item.read())()

    def _from_bytes(self, data: bytes) -> Callable[[], list[Candidate]]:
        return lambda: candidates_of(data, self.limits)

    def _run(
        self,
        prepared: Iterable[list[Item]],
        on_outcome: Callable[[IngestOutcome], None] | None,
        client: str | None = None,
    ) -> IngestReport:
        """Store batches on other threads while the next ones are prepared, in the order given."""
        outcomes: list[IngestOutcome | None] = []
        pending: list[tuple[int, Prepared]] = []

        def settle(settled: list[tuple[int, IngestOutcome]]) -> None:
            for index, outcome in settled:
                outcomes[index] = outcome
                if on_outcome is not None:
                    on_outcome(outcome)

        with _BatchStorer(self._store, client, settle) as storer:
            for items in prepared:
                for item in items:
                    outcomes.append(None)
                    if isinstance(item, IngestOutcome):
                        settle([(len(outcomes) - 1, item)])
                        continue
                    pending.append((len(outcomes) - 1, item))
                    if len(pending) >= self.batch_size:
                        storer.submit(pending)
                        pending = []
            storer.submit(pending)
        report = IngestReport([o for o in outcomes if o is not None])
        self._audit(report, client)
        return report

    def _store(
        self, pending: list[tuple[int, Prepared]], client: str | None
    ) -> list[tuple[int, IngestOutcome]]:
        """Store one batch; (index, outcome) for each item. A failing batch is retried item by item."""
        if not pending:
            return []
        try:
            results = self.store.add_instances(
                [(r.data, r.meta) for _, r in pending], user=self.user, client=client or self.client
            )
        except Exception as err:  # noqa: BLE001 - retried one by one so that one bad item names itself
            if len(pending) > 1:
                return [settled for single in pending for settled in self._store([single], client)]
            index, ready = pending[0]
            # Store errors name pseudonyms and hashes only, never what de-identification removed.
            log.warning("storing instance %s failed: %s: %s", ready.meta.sop_uid, type(err).__name__, err)
            reason = f"the store could not save it ({type(err).__name__}); try again later."
            return [(index, IngestOutcome(ready.name, "refused", reason, retryable=True))]
        return [
            (
                index,
                IngestOutcome(r.name, result.status, None, r.meta.sop_uid, r.meta.study_uid, r.meta.flags),
            )
            for (index, r), result in zip(pending, results, strict=True)
        ]

    def _audit(self, report: IngestReport, client: str | None) -> None:
        """One summary event per call: counts only (file names may themselves identify a patient)."""
        if report.outcomes:
            audit.record(
                self.store, "ingest", "batch", None, self.user, client or self.client, detail=report.counts()
            )


class _BatchStorer:
    """Up to STORE_THREADS batches stored at once, settled in submission order.

    One batch spends about half its time waiting for fsyncs (blobs, then the commit) and half in
    Python building rows; a second batch in flight fills those waits. Two batches never share a SOP
    Instance UID (the later one waits), so which copy is "stored" and which "duplicate" is the same as
    when storing one batch after the other, and no blob is shared between concurrent batches.
    """

    def __init__(
        self,
        store: Callable[[list[tuple[int, Prepared]], str | None], list[tuple[int, IngestOutcome]]],
        client: str | None,
        settle: Callable[[list[tuple[int, IngestOutcome]]], None],
    ) -> None:
        self._store, self._client, self._settle = store, client, settle
        self._pool = ThreadPoolExecutor(STORE_THREADS, thread_name_prefix="ingest-store")
        self._in_flight: deque[tuple[set[str], Future[list[tuple[int, IngestOutcome]]]]] = deque()

    def __enter__(self) -> _BatchStorer:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            while self._in_flight:
                self._settle_oldest()
        finally:
            self._pool.shutdown(wait=True)

    def submit(self, batch: list[tuple[int, Prepared]]) -> None:
        if not batch:
            return
        uids = {ready.meta.sop_uid for _, ready in batch}
        while self._in_flight and (
            len(self._in_flight) >= STORE_THREADS or any(uids & busy for busy, _ in self._in_flight)
        ):
            self._settle_oldest()
        self._in_flight.append((uids, self._pool.submit(self._store, batch, self._client)))

    def _settle_oldest(self) -> None:
        self._settle(self._in_flight.popleft()[1].result())


def _refuse(reason: str) -> Callable[[], list[Candidate]]:
    def refuse() -> list[Candidate]:
        raise Refused(reason)

    return refuse


def _advancing(prepared: Iterable[list[Item]], advance: Callable[[], None]) -> Iterator[list[Item]]:
    for items in prepared:
        yield items
        advance()
