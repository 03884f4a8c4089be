"""The quickstart always runs: real data when it is here, the synthetic set when offline."""

from __future__ import annotations

import json
import socket


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


def test_quickstart_falls_back_to_synthetic_offline(tmp_path, run_cli):
    empty = tmp_path / "no-data"
    empty.mkdir()
    run = tmp_path / "run"
    result = run_cli(
        "quickstart",
        "--out",
        run,
        "--time-budget",
        "0.1",
        timeout=600,
        MEDSIGHT_DATA=str(empty),
        MEDSIGHT_MEDMNIST_URL=f"http://127.0.0.1:{closed_port()}/{{name}}.npz",
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    fallback = [line for line in out.splitlines() if line.startswith("could not download pneumoniamnist")]
    assert len(fallback) == 1 and "synthetic" in fallback[0]
    assert "quickstart data set: synthetic" in out
    assert f"report: {run / 'report.html'}" in out
    assert json.loads((run / "metrics.json").read_text())["dataset"] == "synthetic"


def test_quickstart_uses_pneumoniamnist_when_present(tmp_path, monkeypatch):
    from medsight import workflows

    picked = workflows.pick_quickstart_dataset(log=lambda line: (_ for _ in ()).throw(AssertionError(line)))
    assert picked == "pneumoniamnist"
