"""Benchmark ingest (read + check + de-identify + encrypt + index) against dicognito and Orthanc.

The 28-slice CT series (``$MEDSIGHT_DATA/dicom/ct_head_ge``) is copied ``--copies`` times with its
Study, Series and SOP Instance UIDs varied (so every file is a new instance, not a duplicate) into
one folder, and that folder is ingested into a fresh store: medsight on SQLite (worker processes, as
``medsight ingest`` does for many files, and the single-process path for comparison) and on
PostgreSQL (a fresh schema, created and dropped here). Beside it, in the same run and on the same
files: ``dicognito`` (its Python API: read, anonymize, write each file, one process as its CLI
does) and Orthanc (Debian package, started on loopback like the tests) storing the files through
its REST API (``POST /instances`` from two client threads). The engines take turns, ``--repeats``
rounds, and each one's median is reported, so a load spike from other processes hits all of them.

    MEDSIGHT_DATA=../shared/data .venv/bin/python benchmarks/ingest.py [--copies 10] [--repeats 3]

The table goes into BENCHMARKS.md between ``<!-- ingest-benchmark -->`` markers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pydicom
from benchmark_sections import add_output_options, publish
from pydicom.uid import generate_uid

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the Orthanc runner the interop tests use

MARKER = "<!-- ingest-benchmark -->"
PG_URL = "postgresql+psycopg://root@127.0.0.1:5432/test"
SQLITE = "medsight, SQLite (worker processes)"
RATIOS = [
    ("medsight (SQLite) / dicognito", SQLITE, "dicognito (de-identify only)"),
    ("medsight (SQLite) / Orthanc", SQLITE, "Orthanc REST (store only)"),
    ("medsight PostgreSQL / SQLite", "medsight, PostgreSQL (worker processes)", SQLITE),
    ("worker processes / single process (SQLite)", SQLITE, "medsight, SQLite (single process)"),
]
COMMAND = "MEDSIGHT_DATA=../shared/data .venv/bin/python benchmarks/ingest.py"


def series_folder() -> Path:
    data = Path(os.environ.get("MEDSIGHT_DATA") or REPO.parent / "shared" / "data")
    folder = data / "dicom" / "ct_head_ge"
    if not folder.is_dir():
        sys.exit(f"the CT series is not at {folder}: set MEDSIGHT_DATA to the shared data folder.")
    return folder


def make_copies(source: Path, copies: int, out: Path) -> list[Path]:
    """``copies`` of the series, each with its own (deterministic, valid) Study/Series/SOP UIDs."""
    files = []
    for copy in range(copies):
        for path in sorted(source.glob("*.dcm")):
            ds = pydicom.dcmread(path)
            for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
                setattr(ds, keyword, generate_uid(entropy_srcs=[str(ds[keyword].value), str(copy)]))
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            target = out / f"{copy:03d}-{path.name}"
            ds.save_as(target)
            files.append(target)
    return files


Engine = Callable[[], float]  # one measured run; returns the seconds its measured part took


def medsight_run(folder: Path, n_files: int, url: Callable[[], str | None], workers: int | None) -> Engine:
    """Ingest the folder into a fresh store (new MEDSIGHT_HOME; ``url()`` gives the database, None: SQLite)."""

    def run() -> float:
        from medsight.ingest import Ingestor
        from medsight.store import open_store

        os.environ["MEDSIGHT_HOME"] = tempfile.mkdtemp(prefix="bench-home-")
        with open_store(url()) as store:
            ingestor = Ingestor(store, client="benchmark", workers=workers)
            start = time.perf_counter()
            report = ingestor.ingest_paths([folder], progress=False)
            seconds = time.perf_counter() - start
        if report.counts()["stored"] != n_files:
            raise RuntimeError(
                f"medsight stored {report.counts()['stored']} of {n_files}: {report.summary()}"
            )
        return seconds

    return run


def medsight_cpu_ms(folder: Path, n_files: int) -> float:
    """CPU milliseconds per file of the single-process path (all threads): independent of other load."""
    start = time.process_time()
    medsight_run(folder, n_files, lambda: None, 1)()
    return (time.process_time() - start) / n_files * 1000


def dicognito_run(files: list[Path], out: Path) -> Engine:
    def run() -> float:
        from dicognito.anonymizer import Anonymizer

        anonymizer = Anonymizer()
        start = time.perf_counter()
        for path in files:
            ds = pydicom.dcmread(path)
            anonymizer.anonymize(ds)
            ds.save_as(out / path.name)
        return time.perf_counter() - start

    return run


def orthanc_run(files: list[Path], orthanc: Any) -> Engine:
    """POST /instances of every file from two threads (one keep-alive session each)."""
    import requests

    payloads = [path.read_bytes() for path in files]  # Orthanc is sent bytes: reading is not its work
    local = threading.local()

    def post(data: bytes) -> None:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        local.session.post(f"{orthanc.url}/instances", data=data, timeout=60).raise_for_status()

    def run() -> float:
        orthanc.clear()  # the previous round's instances; not timed
        start = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(post, payloads))
        return time.perf_counter() - start

    return run


# -- PostgreSQL -------------------------------------------------------------------------------------


class PgSchema:
    """A schema of its own in the ``test`` database: emptied before each run, dropped at the end."""

    def __init__(self) -> None:
        import psycopg

        self.name = f"bench_ingest_{os.getpid()}"
        self.conn = psycopg.connect(
            "host=127.0.0.1 port=5432 user=root dbname=test", autocommit=True, connect_timeout=3
        )

    def fresh(self) -> str:
        self.conn.execute(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE')
        self.conn.execute(f'CREATE SCHEMA "{self.name}"')
        return f"{PG_URL}?options=-csearch_path%3D{self.name}"

    def drop(self) -> None:
        self.conn.execute(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE')
        self.conn.close()


def pg_schema() -> PgSchema | None:
    try:
        return PgSchema()
    except Exception as err:  # noqa: BLE001 - no server: the PostgreSQL row is left out, and said so
        print(f"PostgreSQL unavailable ({type(err).__name__}): its row is left out.")
        return None


# -- the report -------------------------------------------------------------------------------------


def machine() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cores} cores ({platform.processor() or platform.machine()}), Python {platform.python_version()}"


def section(results: dict[str, list[float]], extra: dict[str, str], args: argparse.Namespace) -> str:
    med = {name: statistics.median(values) for name, values in results.items() if values}
    rows = "\n".join(
        f"| {name} | {value:.0f} | {'/'.join(f'{v:.0f}' for v in results[name])} |"
        for name, value in med.items()
    )
    ratios = [
        f"| {label} | {paired_ratio(results[top], results[bottom]):.2f} |"
        for label, top, bottom in RATIOS
        if top in results and bottom in results
    ]
    n_files = args.copies * 28
    return f"""## Ingest: CT series, medsight vs dicognito vs Orthanc

`{COMMAND} --copies {args.copies} --repeats {args.repeats}` on {extra["date"]};
{extra["machine"]}; load average {extra["load"]} (other sessions share these cores, so absolute
figures move with their load; the engines take turns each round and ratios are the robust part).

Work: {n_files} files = the 28-slice CT series (`ct_head_ge`, 512×512, 16 bit, 0.5 MB each) copied
{args.copies} times with new Study/Series/SOP UIDs, into one fresh store per run. medsight = read, pixel
decode check, PS3.15 Basic Profile de-identification, AES-256-GCM encryption, fsynced blob, SQL index
and audit rows. dicognito = read, anonymize, write (no storage, no index). Orthanc = `POST /instances`
from two client threads (storage and index; no de-identification, no encryption).

| engine | files/s (median) | each round |
|---|---:|---|
{rows}

| ratio (median over rounds of the paired ratio) | value |
|---|---:|
{chr(10).join(ratios)}

Target (issue 3): at least 100 files/s on 2 cores with SQLite; median here: {med[SQLITE]:.0f} files/s.
Worker processes (one per core) prepare files when an ingest has 64 or more; the pixel decode check
is kept for every syntax (for native pixel data it costs ~0.1 ms, so skipping it would gain nothing).
CPU cost of medsight's single-process path: {extra["cpu"]} ms per file (all threads), i.e. about
{extra["bound"]} files/s on 2 idle cores when the preparation runs in worker processes.
"""


def paired_ratio(top: list[float], bottom: list[float]) -> float:
    """Median over rounds of top/bottom: both ran in the same round, under about the same load."""
    return statistics.median(t / b for t, b in zip(top, bottom, strict=True))


def run_rounds(engines: dict[str, Engine], n_files: int, repeats: int) -> dict[str, list[float]]:
    """Engines take turns, ``repeats`` rounds: files/s of each run."""
    results: dict[str, list[float]] = {name: [] for name in engines}
    for round_number in range(repeats):
        for name, run in engines.items():
            seconds = run()
            results[name].append(n_files / seconds)
            print(
                f"round {round_number + 1}: {name}: {n_files / seconds:.0f} files/s ({seconds:.1f} s)",
                flush=True,
            )
    return results


def measure(work: Path, files: list[Path], repeats: int) -> tuple[dict[str, list[float]], float]:
    from orthanc import run_orthanc

    n, folder = len(files), work / "in"
    pg = pg_schema()
    try:
        with run_orthanc(work / "orthanc") as orthanc:
            engines = {
                "medsight, SQLite (worker processes)": medsight_run(folder, n, lambda: None, None),
                "medsight, SQLite (single process)": medsight_run(folder, n, lambda: None, 1),
            }
            if pg is not None:
                engines["medsight, PostgreSQL (worker processes)"] = medsight_run(folder, n, pg.fresh, None)
            engines["dicognito (de-identify only)"] = dicognito_run(files, work / "dicognito")
            engines["Orthanc REST (store only)"] = orthanc_run(files, orthanc)
            results = run_rounds(engines, n, repeats)
    finally:
        if pg is not None:
            pg.drop()
    return results, medsight_cpu_ms(folder, n)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--copies", type=int, default=10, help="copies of the 28-file series")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; the median is reported")
    add_output_options(parser)
    args = parser.parse_args()
    os.environ.pop("MEDSIGHT_DB_URL", None)  # SQLite rows must be SQLite; PostgreSQL gets its own URL
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        work = Path(tmp)
        for sub in ("in", "dicognito"):
            (work / sub).mkdir()
        files = make_copies(series_folder(), args.copies, work / "in")
        results, cpu = measure(work, files, args.repeats)
    load_after = os.getloadavg()
    extra = {
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "load": f"{load_before[0]:.1f} before, {load_after[0]:.1f} after",
        "cpu": f"{cpu:.1f}",
        "bound": f"{2000 / cpu:.0f}",
    }
    publish(args, section(results, extra, args), MARKER, {"files_per_second": results, **extra})


if __name__ == "__main__":
    main()
