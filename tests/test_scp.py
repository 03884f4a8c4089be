"""The C-STORE receiver against pynetdicom's own storescu and echoscu apps (real clients, real sockets).

Storing the series (and its duplicate) runs on SQLite and PostgreSQL; the refusals on SQLite.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import both_backends

from medsight.ingest.scp import start_scp
from medsight.store import Store, check_store


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def app(name: str, port: int, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pynetdicom", name, "127.0.0.1", str(port), *args, "-aec", "MEDSIGHT"]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.fixture
def receiver(store: Store) -> Iterator[tuple[Store, int]]:
    port = free_port()
    server = start_scp(store, port, "MEDSIGHT", ["SCANNER"], block=False)
    assert server is not None
    try:
        yield store, port
    finally:
        server.shutdown()


@both_backends
def test_storescu_sends_ct_series_and_each_slice_is_stored_once(
    receiver: tuple[Store, int], shared_data: Path
) -> None:
    store, port = receiver
    files = sorted(str(p) for p in (shared_data / "dicom" / "ct_head_ge").glob("*.dcm"))
    sent = app("storescu", port, *files, "-aet", "SCANNER")
    assert sent.returncode == 0, sent.stderr
    assert "E:" not in sent.stderr
    (study,) = store.find_studies()
    assert (study.series_count, study.instance_count) == (1, 28)
    assert check_store(store).ok
    resent = app("storescu", port, files[0], "-aet", "SCANNER")  # a duplicate is still a success
    assert resent.returncode == 0 and "E:" not in resent.stderr
    assert store.find_studies()[0].instance_count == 28


def test_echo_works_and_unknown_caller_is_rejected(receiver: tuple[Store, int], shared_data: Path) -> None:
    store, port = receiver
    echo = app("echoscu", port, "-aet", "SCANNER")
    assert echo.returncode == 0, echo.stderr
    intruder = app("storescu", port, str(shared_data / "dicom" / "ct_head_ge" / "01.dcm"), "-aet", "INTRUDER")
    assert intruder.returncode != 0
    assert "Calling AE title not recognised" in intruder.stderr
    assert store.find_studies() == []


def test_instance_without_pixels_gets_a_failure_status(receiver: tuple[Store, int]) -> None:
    from pydicom.data import get_testdata_file

    store, port = receiver
    plan = get_testdata_file("rtplan.dcm", download=False)
    sent = app("storescu", port, str(plan), "-aet", "SCANNER", "-d")
    assert "0xC000" in sent.stderr  # "cannot understand": not an image, nothing stored
    assert store.find_studies() == []
