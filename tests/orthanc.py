"""Orthanc (Debian's ``orthanc`` + ``orthanc-dicomweb``) started by a test or benchmark, never the system service.

``run_orthanc`` writes its own JSON configuration into a temporary folder (storage and index there,
loopback-only HTTP without authentication, DICOMweb plugin loaded from the Debian package's folder,
medsight's SCP registered as a modality), waits for ``/system`` to answer, and terminates (then kills)
it afterwards. ``orthanc_binary`` skips the test when Orthanc is missing, except in CI where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

DEFAULT_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
INSTALL_HINT = "apt-get install -y orthanc orthanc-dicomweb (or `make test` as root)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def orthanc_binary() -> str:
    """The Orthanc executable; pytest.skip without it (pytest.fail when CI=true: CI must run these)."""
    found = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)
    if found:
        return found
    message = f"Orthanc is not installed: {INSTALL_HINT}."
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def dicomweb_plugin() -> Path | None:
    """The DICOMweb plugin as the Debian package installed it (``dpkg -L orthanc-dicomweb``)."""
    try:
        listing = subprocess.run(
            ["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        listing = ""
    candidates = [Path(line) for line in listing.splitlines() if "/plugins/" in line and ".so" in line]
    found = [path for path in candidates if path.exists()]
    if found:
        return found[0]
    return DEFAULT_PLUGIN if DEFAULT_PLUGIN.exists() else None


@dataclass(frozen=True)
class Orthanc:
    """A running Orthanc: its ports, AE title and a tiny REST client."""

    http_port: int
    dicom_port: int
    aet: str = "ORTHANC"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def rest(self, method: str, path: str, body: bytes | dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        headers = {"Content-Type": "application/json" if isinstance(body, dict) else "application/dicom"}
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(request, timeout=60) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def upload(self, data: bytes) -> dict[str, Any]:
        """POST /instances: store one DICOM file."""
        return self.rest("POST", "/instances", data)

    def instance_tags(self) -> list[dict[str, Any]]:
        """Every stored instance's main tags (simplified), for checks."""
        return [self.rest("GET", f"/instances/{i}/simplified-tags") for i in self.rest("GET", "/instances")]

    def clear(self) -> None:
        for patient in self.rest("GET", "/patients"):
            self.rest("DELETE", f"/patients/{patient}")


def orthanc_config(
    folder: Path, http_port: int, dicom_port: int, modalities: dict[str, tuple[str, int]]
) -> Path:
    """Orthanc's configuration: everything in ``folder``, loopback HTTP, modalities (AE, port) on 127.0.0.1."""
    plugin = dicomweb_plugin()
    config = {
        "Name": "medsight-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "DicomAet": "ORTHANC",
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,  # HTTP answers loopback clients only
        "AuthenticationEnabled": False,
        "DicomAlwaysAllowEcho": False,  # DICOM listens on every interface: only known modalities may talk
        "DicomAlwaysAllowStore": False,
        "DicomCheckModalityHost": True,
        "DicomModalities": {
            name: {
                "AET": aet,
                "Host": "127.0.0.1",
                "Port": port,
                "AllowEcho": True,
                "AllowFind": True,
                "AllowGet": True,
                "AllowMove": True,
                "AllowStore": True,
            }
            for name, (aet, port) in modalities.items()
        },
        "Plugins": [str(plugin)] if plugin else [],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "SaveJobs": False,
        "StableAge": 1,
        "ConcurrentJobs": 1,
        "HttpThreadsCount": 8,
    }
    path = folder / "orthanc.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def _wait_ready(process: subprocess.Popen[bytes], server: Orthanc, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            server.rest("GET", "/system")
            return
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.1)
    raise RuntimeError(f"Orthanc did not answer /system within {timeout} s: {log.read_text()[-2000:]}")


@contextmanager
def run_orthanc(folder: Path, modalities: dict[str, tuple[str, int]] | None = None) -> Iterator[Orthanc]:
    """Start Orthanc on free loopback ports with its own configuration in ``folder``; stop it afterwards."""
    binary = orthanc_binary()
    folder.mkdir(parents=True, exist_ok=True)
    server = Orthanc(free_port(), free_port())
    config = orthanc_config(folder, server.http_port, server.dicom_port, modalities or {})
    log = folder / "orthanc.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([binary, str(config)], stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_ready(process, server, log)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
