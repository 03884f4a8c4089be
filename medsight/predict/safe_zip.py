"""An uploaded zip archive read in memory, with limits: its members' bytes, never written under their names.

A zip is an attacker's favourite container: a member may be named ``../../etc/x`` (path traversal),
or a few kilobytes may inflate to gigabytes (a zip bomb). Members are therefore read into memory and
never extracted under their own names, the count of entries is capped before anything is inflated,
the sizes the archive declares are summed against the cap, and every member is read with a bounded
read so that a lying size field cannot get past it either. Folders, hidden files and the
``__MACOSX`` resource forks macOS adds are skipped: they are never part of what was zipped.
"""

from __future__ import annotations

import io
import zipfile

from medsight.predict.errors import PredictInputError, UploadTooLargeError

ZIP_MAGIC = b"PK\x03\x04"
MAX_ENTRIES = 32  # a record is a few files; macOS doubles them with resource forks
CHUNK = 1 << 20


def is_zip(data: bytes) -> bool:
    return data[:4] == ZIP_MAGIC


def _skipped(info: zipfile.ZipInfo) -> bool:
    parts = [p for p in info.filename.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return info.is_dir() or not parts or parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts)


def _bounded_read(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int, too_large: Exception
) -> bytes:
    """The member's bytes, refused as soon as they pass ``budget`` whatever its header says."""
    chunks, size = [], 0
    with archive.open(info) as member:
        while chunk := member.read(min(CHUNK, budget - size + 1)):
            size += len(chunk)
            if size > budget:
                raise too_large
            chunks.append(chunk)
    return b"".join(chunks)


def _entries(archive: zipfile.ZipFile, max_entries: int) -> list[zipfile.ZipInfo]:
    entries = archive.infolist()
    if len(entries) > max_entries:
        raise PredictInputError(
            f"the zip holds {len(entries)} entries, more than the {max_entries} taken; zip only the files "
            "of the one item you want predicted on."
        )
    if any(info.flag_bits & 0x1 for info in entries):
        raise PredictInputError("the zip is encrypted; zip the files again without a password.")
    return [info for info in entries if not _skipped(info)]


def read_members(data: bytes, max_total: int, max_entries: int = MAX_ENTRIES) -> list[tuple[str, bytes]]:
    """(name, bytes) of every member that is a file the user zipped, at most ``max_total`` bytes inflated.

    The names are for messages and choices only; callers must never use them as paths.
    """
    too_large = UploadTooLargeError(
        f"the zip unpacks to more than this server's limit of {max_total} bytes; send a smaller archive."
    )
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = _entries(archive, max_entries)
            if sum(info.file_size for info in members) > max_total:
                raise too_large  # declared sizes: refused before anything is inflated
            read, left = [], max_total
            for info in members:
                content = _bounded_read(archive, info, left, too_large)
                left -= len(content)
                read.append((info.filename, content))
            return read
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, ValueError) as err:
        # ValueError/NotImplementedError: a compression method or field zipfile cannot handle
        raise PredictInputError(
            f"the zip archive is damaged or uses a form this server cannot read ({type(err).__name__}); "
            "make it again with a standard zip tool (deflate, no password)."
        ) from None
