"""What the user pointed at, as a flat list of sources: files, files in folders, members of zips.

Zip archives are read in memory, member by member, and nothing is ever extracted to disk, so a
member named ``../evil.dcm`` cannot land anywhere; such a member is still refused, because an
archive built to escape its folder is not one to trust. Zip bombs are refused before
decompression from the sizes the archive declares (per-member ratio, archive total), and
decompression never produces more than the declared size (``zipfile`` stops there and checks
the CRC), so a lying header cannot blow up memory either.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from medsight.errors import BadInputError

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first local header, or an empty zip
# Deflate compresses real images 2-20x; a member over this ratio (and big enough to matter) is a bomb.
MAX_ZIP_RATIO = 200
RATIO_CHECK_MIN_BYTES = 1 << 20
SKIPPED_NAMES = frozenset({"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini"})


class Refused(Exception):
    """A source that cannot be ingested; the message is the per-file reason (never header values)."""


@dataclass(frozen=True)
class Source:
    """One file to ingest: ``name`` as the user knows it, ``read()`` gives its bytes or raises Refused."""

    name: str
    size: int
    read: Callable[[], bytes]
    path: Path | None = None  # a plain file (not a zip member): worker processes read it themselves


def _skipped(name: str) -> bool:
    """Hidden files and OS clutter (macOS resource forks, thumbnails) are not images anyone sent."""
    return any(part in SKIPPED_NAMES or part.startswith(".") for part in PurePosixPath(name).parts)


def _is_zip(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(4) in ZIP_MAGIC
    except OSError:
        return False


def read_file(path: Path, max_bytes: int) -> bytes:
    """The file's bytes; Refused when it cannot be read or is over ``max_bytes``."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)  # the file may have grown since it was listed
    except OSError as err:
        raise Refused(f"cannot read the file ({err.strerror or type(err).__name__}).") from None
    if len(data) > max_bytes:
        raise Refused(_too_large(len(data), max_bytes))
    return data


def _read_file(path: Path, max_bytes: int) -> Callable[[], bytes]:
    return lambda: read_file(path, max_bytes)


def _too_large(size: int, max_bytes: int) -> str:
    return (
        f"the file is larger than the limit ({size / 2**20:.1f} MiB > {max_bytes / 2**20:.1f} MiB); "
        "raise --max-file-mb to accept it."
    )


def unsafe_member_name(name: str) -> bool:
    """True for zip member names that would escape a target folder: absolute, drive, or with '..'."""
    normal = name.replace("\\", "/")
    if normal.startswith("/") or (len(normal) > 1 and normal[1] == ":"):
        return True
    return ".." in normal.split("/")


class SourceLister:
    """Expands paths into sources (or refusals), keeping zip archives open until ``close()``."""

    def __init__(self, max_file_bytes: int, max_archive_bytes: int) -> None:
        self.max_file_bytes = max_file_bytes
        self.max_archive_bytes = max_archive_bytes
        self._archives: list[zipfile.ZipFile] = []

    def close(self) -> None:
        for archive in self._archives:
            archive.close()
        self._archives.clear()

    def expand(self, paths: list[Path]) -> Iterator[Source | tuple[str, str]]:
        """Sources in a stable order; a refusal is a (name, reason) pair."""
        for path in paths:
            name = str(path)
            if path.is_dir():
                files = sorted(p for p in path.rglob("*") if p.is_file())
                for file in files:
                    if not _skipped(str(file.relative_to(path))):
                        yield from self._file(file, str(file))
            elif path.is_file():
                yield from self._file(path, name)
            else:
                yield name, "no such file or folder."

    def _file(self, path: Path, name: str) -> Iterator[Source | tuple[str, str]]:
        if _is_zip(path):
            yield from self._zip(path, name)
            return
        try:
            size = path.stat().st_size
        except OSError as err:
            yield name, f"cannot read the file ({err.strerror or type(err).__name__})."
            return
        if size > self.max_file_bytes:
            yield name, _too_large(size, self.max_file_bytes)
            return
        yield Source(name, size, _read_file(path, self.max_file_bytes), path)

    def _zip(self, path: Path, name: str) -> Iterator[Source | tuple[str, str]]:
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as err:
            yield name, f"a damaged zip archive ({type(err).__name__})."
            return
        self._archives.append(archive)
        members = [info for info in archive.infolist() if not info.is_dir()]
        total = sum(info.file_size for info in members)
        if total > self.max_archive_bytes:
            yield (
                name,
                f"zip bomb suspected: the archive unpacks to {total / 2**20:.0f} MiB, over the "
                f"{self.max_archive_bytes / 2**20:.0f} MiB limit; nothing in it was ingested.",
            )
            return
        for info in members:
            member_name = f"{name}:{info.filename}"
            if unsafe_member_name(info.filename):
                yield member_name, "unsafe path in the zip (absolute or with '..', zip-slip): refused."
            elif _skipped(info.filename):
                continue
            elif reason := self._member_problem(info):
                yield member_name, reason
            else:
                yield Source(member_name, info.file_size, self._read_member(archive, info))

    def _member_problem(self, info: zipfile.ZipInfo) -> str | None:
        if info.flag_bits & 0x1:
            return "the zip member is encrypted; unpack it yourself and ingest the files."
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size >= RATIO_CHECK_MIN_BYTES and ratio > MAX_ZIP_RATIO:
            return (
                f"zip bomb suspected: the member unpacks {ratio:.0f} times its packed size "
                f"(limit {MAX_ZIP_RATIO}); not decompressed."
            )
        if info.file_size > self.max_file_bytes:
            return _too_large(info.file_size, self.max_file_bytes)
        return None

    def _read_member(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[], bytes]:
        def read() -> bytes:
            try:
                with archive.open(info) as member:
                    data = member.read(self.max_file_bytes + 1)
            except Exception as err:  # BadZipFile, zlib.error, bad CRC, EOF: never fatal for the others
                raise Refused(f"a damaged zip member ({type(err).__name__}).") from None
            if data[:4] in ZIP_MAGIC:
                raise Refused("a zip inside a zip is not opened (bomb risk); unpack the outer one first.")
            return data

        return read


def check_limits(max_file_bytes: int, max_archive_bytes: int) -> None:
    if max_file_bytes <= 0 or max_archive_bytes <= 0:
        raise BadInputError("size limits must be positive numbers of bytes.")
