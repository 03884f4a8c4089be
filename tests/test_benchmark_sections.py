"""The shared ending of the benchmark scripts: options, the BENCHMARKS.md section, the JSON results."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from benchmark_sections import add_output_options, machine, publish  # noqa: E402

MARKER = "<!-- demo-benchmark -->"


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_output_options(parser)
    return parser.parse_args(list(argv))


def test_a_section_is_replaced_in_place_and_the_rest_left_alone(tmp_path, capsys):
    out = tmp_path / "BENCHMARKS.md"
    out.write_text(f"# Benchmarks\n\nintro\n\n{MARKER}\n## old\n{MARKER}\n\n## someone else's\n")
    publish(
        _args("--out", str(out), "--json", str(tmp_path / "raw.json")), "## new\n", MARKER, [{"auc": 0.9}]
    )
    assert out.read_text() == f"# Benchmarks\n\nintro\n\n{MARKER}\n## new\n{MARKER}\n## someone else's\n"
    assert json.loads((tmp_path / "raw.json").read_text()) == [{"auc": 0.9}]
    assert "## new" in capsys.readouterr().out

    publish(_args("--out", str(out)), "## second\n", "<!-- other -->", {})  # a new marker: appended
    assert (
        out.read_text().endswith("<!-- other -->\n## second\n<!-- other -->\n")
        and "## new" in out.read_text()
    )


def test_no_write_only_prints(tmp_path, capsys):
    out = tmp_path / "BENCHMARKS.md"
    publish(_args("--out", str(out), "--no-write"), "## printed\n", MARKER, {})
    assert not out.exists() and "## printed" in capsys.readouterr().out
    assert f"{Path(__file__).resolve().parents[1] / 'BENCHMARKS.md'}" == str(_args().out)
    assert " cores, torch " in machine()
