"""Each benchmark owns one section of BENCHMARKS.md, between a pair of marker comments."""

from __future__ import annotations

from pathlib import Path


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
