"""Tests of ``medsight data pull`` against a local HTTP server on 127.0.0.1 (no internet here)."""

from __future__ import annotations

import hashlib
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from medsight.data.catalogue import MEDMNIST
from medsight.data.pull import pull
from medsight.data.registry import load_dataset
from medsight.errors import DataNotFoundError, DownloadError

ADRENAL_MD5 = "bbd3c5a5576322bc4cdfea780653b1ce"


@dataclass
class FileServer:
    """Serves ``files`` (URL path -> bytes); records every request's Range header and bytes sent."""

    files: dict[str, bytes]
    ranges: list[str | None] = field(default_factory=list)
    bytes_sent: int = 0
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def _handler(server: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            body = server.files.get(self.path.split("?")[0])
            requested = self.headers.get("Range")
            server.ranges.append(requested)
            if body is None:
                self.send_error(404)
                return
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", requested or "")
            if match:
                start = int(match.group(1))
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            self.wfile.write(body[start:])
            server.bytes_sent += len(body) - start

        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

    return Handler


@pytest.fixture
def medmnist_files(shared_data: Path) -> dict[str, bytes]:
    folder = shared_data / "medmnist"
    return {name: (folder / f"{name}.npz").read_bytes() for name in ("adrenalmnist3d", "pneumoniamnist")}


@pytest.fixture
def file_server(medmnist_files: dict[str, bytes]) -> Iterator[FileServer]:
    state = FileServer({f"/{name}.npz": data for name, data in medmnist_files.items()})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture
def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/adrenalmnist3d.npz"


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def test_local_copy_md5_is_the_official_one(medmnist_files):
    assert MEDMNIST["adrenalmnist3d"].md5 == ADRENAL_MD5 == md5(medmnist_files["adrenalmnist3d"])
    assert md5(medmnist_files["pneumoniamnist"]) != MEDMNIST["pneumoniamnist"].md5


def test_pull_then_load_without_shared_data(file_server, medsight_env, tmp_path, monkeypatch):
    path = pull("adrenalmnist3d", url=file_server.url("/adrenalmnist3d.npz"), quiet=True)
    assert path == medsight_env / "downloads" / "adrenalmnist3d.npz"
    assert md5(path.read_bytes()) == ADRENAL_MD5
    assert file_server.ranges == [None]
    assert not path.with_suffix(".npz.part").exists()

    empty = tmp_path / "empty-data"
    empty.mkdir()
    monkeypatch.setenv("MEDSIGHT_DATA", str(empty))
    dataset = load_dataset("adrenalmnist3d")
    assert dataset.source == str(path)
    assert {n: len(s) for n, s in dataset.splits.items()} == {"train": 1188, "val": 98, "test": 298}

    # a second pull finds the verified file and does not download again
    assert pull("adrenalmnist3d", url=file_server.url("/adrenalmnist3d.npz"), quiet=True) == path
    assert len(file_server.ranges) == 1


def test_pull_resumes_a_partial_download(file_server, medmnist_files, medsight_env):
    data = medmnist_files["adrenalmnist3d"]
    half = len(data) // 2
    downloads = medsight_env / "downloads"
    downloads.mkdir()
    (downloads / "adrenalmnist3d.npz.part").write_bytes(data[:half])

    path = pull("adrenalmnist3d", url=file_server.url("/adrenalmnist3d.npz"), quiet=True)
    assert file_server.ranges == [f"bytes={half}-"]
    assert file_server.bytes_sent == len(data) - half
    assert md5(path.read_bytes()) == ADRENAL_MD5
    assert not (downloads / "adrenalmnist3d.npz.part").exists()


def test_pull_with_complete_part_file_gets_416_and_finishes(file_server, medmnist_files, medsight_env):
    downloads = medsight_env / "downloads"
    downloads.mkdir()
    (downloads / "adrenalmnist3d.npz.part").write_bytes(medmnist_files["adrenalmnist3d"])
    path = pull("adrenalmnist3d", url=file_server.url("/adrenalmnist3d.npz"), quiet=True)
    assert md5(path.read_bytes()) == ADRENAL_MD5
    assert file_server.bytes_sent == 0


def test_md5_mismatch_deletes_everything(file_server, medmnist_files, medsight_env):
    file_server.files["/adrenalmnist3d.npz"] = medmnist_files["pneumoniamnist"]  # wrong bytes, right name
    with pytest.raises(DownloadError) as err:
        pull("adrenalmnist3d", url=file_server.url("/adrenalmnist3d.npz"), quiet=True)
    assert ADRENAL_MD5 in str(err.value) and md5(medmnist_files["pneumoniamnist"]) in str(err.value)
    assert list((medsight_env / "downloads").iterdir()) == []


def test_pneumoniamnist_local_file_fails_official_md5(file_server, medsight_env):
    with pytest.raises(DownloadError, match="MD5"):
        pull("pneumoniamnist", url=file_server.url("/pneumoniamnist.npz"), quiet=True)
    assert list((medsight_env / "downloads").iterdir()) == []


def test_http_error_is_a_download_error(file_server, medsight_env):
    with pytest.raises(DownloadError, match="HTTP 404"):
        pull("adrenalmnist3d", url=file_server.url("/nothing-here.npz"), quiet=True)
    assert list((medsight_env / "downloads").iterdir()) == []


def test_unreachable_url_is_a_one_line_download_error(closed_port_url, medsight_env):
    with pytest.raises(DownloadError) as err:
        pull("adrenalmnist3d", url=closed_port_url, timeout=5, quiet=True)
    message = str(err.value)
    assert closed_port_url in message
    assert "\n" not in message
    assert not (medsight_env / "downloads" / "adrenalmnist3d.npz").exists()


def test_pull_unknown_name():
    with pytest.raises(DataNotFoundError, match="adrenalmnist3d"):
        pull("not-a-medmnist")


def test_cli_pull_failure_exits_nonzero_without_traceback(closed_port_url, run_cli):
    result = run_cli("data", "pull", "adrenalmnist3d", "--url", closed_port_url, timeout=60)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.startswith("error: cannot download")
    assert closed_port_url in result.stderr


def test_cli_pull_success(file_server, run_cli, medsight_env):
    result = run_cli("data", "pull", "adrenalmnist3d", "--url", file_server.url("/adrenalmnist3d.npz"))
    assert result.returncode == 0, result.stderr
    target = medsight_env / "downloads" / "adrenalmnist3d.npz"
    assert str(target) in result.stdout
    assert md5(target.read_bytes()) == ADRENAL_MD5
