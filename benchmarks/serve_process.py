"""A real ``medsight serve`` for a benchmark: a trained run registered in a fresh MEDSIGHT_HOME with the
CLI, a clinician who can log in, the server on a free loopback port, and PneumoniaMNIST test PNGs."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

USER, PASSWORD = "bench-clinician", "bench password, loopback only"
MODEL = "pneumonia"


def medsight(*args: str, env: dict[str, str], stdin: str | None = None) -> str:
    """Run a ``medsight`` command as a user would; its output, or the error it printed."""
    done = subprocess.run(
        [sys.executable, "-m", "medsight.cli", *args], env=env, input=stdin, text=True, capture_output=True
    )
    if done.returncode != 0:
        raise SystemExit(f"medsight {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def train_run(out: Path) -> Path:
    """A PneumoniaMNIST run with the defaults (a few minutes on 2 cores)."""
    print(f"training a PneumoniaMNIST model into {out} ...", flush=True)
    medsight("train", "--dataset", "pneumoniamnist", "--out", str(out), env=dict(os.environ))
    return out


def test_pngs(count: int) -> list[bytes]:
    """The first ``count`` PneumoniaMNIST test images as 28×28 grey PNGs."""
    from medsight.data.registry import load_dataset

    images = load_dataset("pneumoniamnist").splits["test"].images[:count]
    pngs = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(image[0], dtype=np.uint8)).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    return pngs


def multipart_png(png: bytes) -> tuple[bytes, str]:
    """A ready multipart/form-data body with the PNG as field ``file`` (built once, sent many times)."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="image.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + png
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_healthy(server: subprocess.Popen, base: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if server.poll() is not None:
            raise SystemExit(f"medsight serve exited with code {server.returncode}")
        try:
            if httpx.get(f"{base}/api/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"medsight serve did not answer within {seconds:.0f} s")
        time.sleep(0.25)


@contextmanager
def serve(run: Path, home: Path, torch_threads: int | None = None) -> Iterator[tuple[str, dict]]:
    """``medsight serve`` with ``run`` as the default model; yields its base URL and what it serves."""
    env = {**os.environ, "MEDSIGHT_HOME": str(home)}
    registered = medsight("models", "register", str(run), "--name", MODEL, "--default", env=env)
    medsight("user", "add", USER, "--role", "clinician", "--password-stdin", env=env, stdin=PASSWORD)
    port = free_port()
    command = ["serve", "--port", str(port), "--log-level", "warning"]
    command += ["--torch-threads", str(torch_threads)] if torch_threads else []
    server = subprocess.Popen([sys.executable, "-m", "medsight.cli", *command], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(server, base)
        info = {
            "model": registered.strip().removeprefix("registered "),
            "torch_threads": torch_threads or 1,
            "pid": server.pid,
        }
        token = httpx.post(f"{base}/api/auth/login", json={"username": USER, "password": PASSWORD}).json()
        card = httpx.get(f"{base}/api/models/{MODEL}", headers={"Authorization": f"Bearer {token['token']}"})
        info["variant"] = card.json()["latest"]["serving_variant"] or "eager"
        yield base, info
    finally:
        server.terminate()
        server.wait(timeout=30)
