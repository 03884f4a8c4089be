"""Each benchmark owns one section of BENCHMARKS.md, between a pair of marker comments.

Every script ends the same way: its section goes into BENCHMARKS.md (``--out``; ``--no-write``
only prints it) and its raw results optionally into a JSON file (``--json``). The options and
that ending live here, once.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def write_section(text: str, path: Path, marker: str) -> None:
    """Replace the section between the two ``marker`` lines (append it if absent); leave the rest alone."""
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{marker}\n{text.rstrip()}\n{marker}\n"
    if current.count(marker) >= 2:
        before, _, rest = current.partition(marker)
        _, _, after = rest.partition(marker)
        current = before + block + after.lstrip("\n")
    else:
        current = current.rstrip("\n") + "\n\n" + block
    path.write_text(current)


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """``--out``, ``--no-write`` and ``--json``: where a benchmark's section and raw results go."""
    parser.add_argument("--out", type=Path, default=BENCHMARKS_MD, help="the Markdown file to update")
    parser.add_argument("--no-write", action="store_true", help="print the section; leave --out alone")
    parser.add_argument("--json", type=Path, help="also write the raw results here")


def publish(args: argparse.Namespace, section: str, marker: str, results: Any) -> None:
    """Write ``section`` into ``args.out`` (unless ``--no-write``), ``results`` to ``--json``; print it."""
    if not args.no_write:
        write_section(section, args.out, marker)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(section)


def machine() -> str:
    """The line under each section's command: processor, cores, torch, date."""
    import torch  # here, not at the top: the ingest and serving benchmarks need no torch

    processor = platform.processor() or platform.machine()
    return f"{processor}, {os.cpu_count()} cores, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}"
