"""Preparing instances for the store: read → check → de-identify → serialise, in this process or in workers.

Where the time goes (CT slice, 512×512×16 bit, explicit little endian; one core): reading ~1 ms,
the pixel decode check ~1 ms (almost all of it pydicom turning header elements into values, which
de-identification needs anyway; the native "decode" itself is a ``numpy.frombuffer``, so skipping it
for uncompressed syntaxes would save ~0.1 ms and is not done), de-identification ~4 ms (a deep copy of
the dataset, then the table walk), serialising ~2 ms; storing (encrypt, fsync, index) ~2.5 ms of CPU
in the parent. All of it is pure Python under one GIL, so threads do not help: for many files the
preparation runs in worker processes (``prepare_in_processes``), one per core, and the parent only
stores. Both paths run the same ``prepare_unit``, so outcomes are identical; only the speed differs.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset, dcmwrite

from medsight.deid import Deidentifier
from medsight.errors import BadInputError
from medsight.ingest.convert import Candidate, candidates_from_bytes
from medsight.ingest.outcome import IngestOutcome
from medsight.ingest.sources import Refused, Source, read_file
from medsight.store.records import InstanceMeta

log = logging.getLogger(__name__)
# A unit of work: a name and a function giving its candidates (or raising Refused).
Unit = tuple[str, Callable[[], list[Candidate]]]
JOBS_PER_TASK = 4  # files per message to a worker: amortises the pipe round trip (~0.2 ms)
TASKS_IN_FLIGHT_PER_WORKER = 4  # bounds memory (zip members travel as bytes) while keeping workers busy


@dataclass
class Prepared:
    """One de-identified instance, serialised, with what the index needs."""

    name: str
    data: bytes
    meta: InstanceMeta


Item = IngestOutcome | Prepared


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int
    patient_id: str | None


def candidates_of(data: bytes, limits: Limits) -> list[Candidate]:
    if len(data) > limits.max_file_bytes:
        raise Refused(
            f"the file is larger than the limit ({len(data) / 2**20:.1f} MiB > "
            f"{limits.max_file_bytes / 2**20:.1f} MiB)."
        )
    return candidates_from_bytes(data, limits.max_file_bytes, limits.patient_id)


def prepare_unit(deid: Deidentifier, name: str, make: Callable[[], list[Candidate]]) -> list[Item]:
    """De-identified, serialised, indexable items from one unit; a refusal for what fails."""
    try:
        candidates = make()
    except Refused as err:
        return [IngestOutcome(name, "refused", str(err))]
    except Exception as err:  # a bug or an exotic file: refuse it, keep going, log no content
        log.warning("ingest of one file failed unexpectedly (%s)", type(err).__name__)
        return [IngestOutcome(name, "refused", f"unexpected error while reading ({type(err).__name__}).")]
    items: list[Item] = []
    for candidate in candidates:
        part = name + candidate.part
        try:
            items.append(deidentify(deid, part, candidate.dataset))
        except Refused as err:
            items.append(IngestOutcome(part, "refused", str(err)))
        except Exception as err:
            log.warning("de-identification of one instance failed (%s)", type(err).__name__)
            items.append(IngestOutcome(part, "refused", f"de-identification failed ({type(err).__name__})."))
    return items


def deidentify(deid: Deidentifier, name: str, dataset: Dataset) -> Prepared:
    result = deid(dataset)
    buffer = io.BytesIO()
    dcmwrite(buffer, result.dataset, enforce_file_format=True)
    try:
        meta = InstanceMeta.from_dataset(result.dataset, result.flags)
    except BadInputError as err:
        raise Refused(str(err)) from None
    return Prepared(name, buffer.getvalue(), meta)


# -- worker processes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One source, as it crosses to a worker: a file path (read there), bytes, or a refusal already known."""

    name: str
    path: str | None = None
    data: bytes | None = None
    refusal: str | None = None


def job_for(item: Source | tuple[str, str]) -> Job:
    """Files are read by the worker; zip members are read here (the archive is open in this process)."""
    if isinstance(item, tuple):
        return Job(item[0], refusal=item[1])
    if item.path is not None:
        return Job(item.name, path=str(item.path))
    try:
        return Job(item.name, data=item.read())
    except Refused as err:
        return Job(item.name, refusal=str(err))
    except Exception as err:  # the same words prepare_unit would use for a failed read
        return Job(item.name, refusal=f"unexpected error while reading ({type(err).__name__}).")


def _make(job: Job, limits: Limits) -> Callable[[], list[Candidate]]:
    def make() -> list[Candidate]:
        if job.refusal is not None:
            raise Refused(job.refusal)
        data = job.data if job.path is None else read_file(Path(job.path), limits.max_file_bytes)
        return candidates_of(data or b"", limits)

    return make


_worker: tuple[Deidentifier, Limits] | None = None


def _init_worker(deid: Deidentifier, limits: Limits) -> None:
    global _worker
    _worker = (deid, limits)


def _prepare_jobs(jobs: list[Job]) -> list[list[Item]]:
    assert _worker is not None, "worker used before its initializer ran"
    deid, limits = _worker
    return [prepare_unit(deid, job.name, _make(job, limits)) for job in jobs]


def default_workers() -> int:
    """Cores this process may use (the affinity mask, which containers and taskset narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _pool(workers: int, deid: Deidentifier, limits: Limits) -> ProcessPoolExecutor:
    # forkserver, not fork: the parent may run threads (SCP, web server, the store thread) and a fork
    # copies their held locks; the server preloads this module so that each worker starts in ~ms.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(deid, limits))


def _chunks(jobs: Iterable[Job], size: int) -> Iterator[list[Job]]:
    chunk: list[Job] = []
    for job in jobs:
        chunk.append(job)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def prepare_in_processes(
    jobs: Iterable[Job], deid: Deidentifier, limits: Limits, workers: int
) -> Iterator[list[Item]]:
    """``prepare_unit`` of each job in ``workers`` processes; one list per job, in the jobs' order."""
    window: deque[tuple[list[Job], Future[list[list[Item]]]]] = deque()
    with _pool(workers, deid, limits) as pool:
        for chunk in _chunks(jobs, JOBS_PER_TASK):
            window.append((chunk, _submit(pool, chunk, deid, limits)))
            if len(window) >= workers * TASKS_IN_FLIGHT_PER_WORKER:
                yield from _collect(*window.popleft(), deid, limits)
        while window:
            yield from _collect(*window.popleft(), deid, limits)


def _submit(
    pool: ProcessPoolExecutor, chunk: list[Job], deid: Deidentifier, limits: Limits
) -> Future[list[list[Item]]]:
    try:
        return pool.submit(_prepare_jobs, chunk)
    except BrokenProcessPool:  # a worker died earlier: the rest is prepared here, as without workers
        done: Future[list[list[Item]]] = Future()
        done.set_result(_prepare_here(chunk, deid, limits))
        return done


def _prepare_here(chunk: list[Job], deid: Deidentifier, limits: Limits) -> list[list[Item]]:
    return [prepare_unit(deid, job.name, _make(job, limits)) for job in chunk]


def _collect(
    chunk: list[Job], future: Future[list[list[Item]]], deid: Deidentifier, limits: Limits
) -> list[list[Item]]:
    try:
        return future.result()
    except BrokenProcessPool:  # a worker died (out of memory, a codec crash): finish its share here
        log.warning("an ingest worker process died; preparing its files in the main process")
        return _prepare_here(chunk, deid, limits)
