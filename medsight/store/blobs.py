"""Encrypted, content-addressed blob files.

A blob is named by the SHA-256 of its plaintext (the de-identified file), so the same file is
stored once. On disk it is ``MAGIC | version | nonce | AES-256-GCM(plaintext)``, with the header
and the SHA-256 as associated data: a blob copied under another name, or with a changed byte,
fails to decrypt. Every read re-hashes the plaintext as a second check.

Writes are atomic: a temp file in the blob's own folder is written, fsynced, renamed over the
final name and the folder fsynced. A crash leaves either the whole blob or a ``.tmp-*`` file that
``check_store`` removes — never a half blob under a real name.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from medsight.keys import load_or_create_key
from medsight.paths import medsight_home
from medsight.store.errors import BlobIntegrityError, BlobMissingError

MAGIC = b"MSBLOB"
FORMAT_VERSION = 1
NONCE_BYTES = 12
HEADER = MAGIC + bytes([FORMAT_VERSION])
TEMP_PREFIX = ".tmp-"
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def default_blob_root() -> Path:
    return medsight_home() / "blobs"


def default_blob_key() -> bytes:
    return load_or_create_key("blobs", "MEDSIGHT_BLOB_KEY")


def _fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` survive a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_sha(sha: str) -> str:
    # The name becomes a path: accept only what we generate, so no "../" can slip in.
    if not _SHA_RE.match(sha):
        raise ValueError(f"not a SHA-256 hex digest: {sha!r}")
    return sha


class BlobStore:
    """Blobs under ``root/ab/cd/<sha>``, encrypted with a 32-byte AES-256-GCM key."""

    def __init__(self, root: Path | None = None, key: bytes | None = None) -> None:
        self.root = Path(root) if root is not None else default_blob_root()
        key = key if key is not None else default_blob_key()
        if len(key) != 32:
            raise ValueError("the blob key must be 32 bytes (AES-256)")
        self._aead = AESGCM(key)

    def path(self, sha: str) -> Path:
        _check_sha(sha)
        return self.root / sha[:2] / sha[2:4] / sha

    def exists(self, sha: str) -> bool:
        return self.path(sha).is_file()

    def put(self, data: bytes) -> tuple[str, bool]:
        """Store ``data``; returns (sha256, created). A blob already present is left as it is."""
        sha = sha256_hex(data)
        final = self.path(sha)
        if final.is_file():
            return sha, False
        self._ensure_dir(final.parent)
        self._write_atomic(final, self._encrypt(sha, data))
        return sha, True

    def get(self, sha: str) -> bytes:
        """The plaintext of blob ``sha``, decrypted and verified against its name."""
        try:
            raw = self.path(sha).read_bytes()
        except FileNotFoundError:
            raise BlobMissingError(
                f"blob {sha} is missing from {self.root}; run `medsight store check` to list what is affected."
            ) from None
        data = self._decrypt(sha, raw)
        if sha256_hex(data) != sha:
            raise BlobIntegrityError(f"blob {sha} decrypted but its content does not match its SHA-256.")
        return data

    def delete(self, sha: str) -> bool:
        """Remove blob ``sha``; returns whether it was there."""
        path = self.path(sha)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(path.parent)
        return True

    def iter_shas(self) -> Iterator[str]:
        """Every blob name on disk (temp files and strangers are skipped)."""
        for path in sorted(self.root.glob("??/??/*")):
            if _SHA_RE.match(path.name) and path.parent.name == path.name[2:4]:
                yield path.name

    def iter_temp_files(self) -> Iterator[Path]:
        """Temp files a crashed write left behind."""
        yield from sorted(self.root.glob(f"??/??/{TEMP_PREFIX}*"))

    def _encrypt(self, sha: str, data: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)  # random: the same key encrypts many blobs
        return HEADER + nonce + self._aead.encrypt(nonce, data, HEADER + bytes.fromhex(sha))

    def _decrypt(self, sha: str, raw: bytes) -> bytes:
        header, nonce = raw[: len(HEADER)], raw[len(HEADER) : len(HEADER) + NONCE_BYTES]
        if header != HEADER:
            raise BlobIntegrityError(
                f"blob {sha} has an unknown header (not a medsight v{FORMAT_VERSION} blob, or damaged)."
            )
        try:
            return self._aead.decrypt(nonce, raw[len(HEADER) + NONCE_BYTES :], HEADER + bytes.fromhex(sha))
        except InvalidTag:
            raise BlobIntegrityError(
                f"blob {sha} failed its integrity check (changed on disk, or a different blob key): "
                "restore it from a backup or re-ingest the file."
            ) from None

    def _ensure_dir(self, folder: Path) -> None:
        if folder.is_dir():
            return
        made = []
        for parent in (folder.parent.parent, folder.parent, folder):
            if not parent.is_dir():
                parent.mkdir(parents=True, exist_ok=True)
                made.append(parent)
        for parent in made:  # the new folder entries must be durable before the blob in them
            _fsync_dir(parent.parent)

    def _write_atomic(self, final: Path, payload: bytes) -> None:
        temp = final.parent / f"{TEMP_PREFIX}{final.name[:16]}-{secrets.token_hex(4)}"
        try:
            with open(temp, "xb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, final)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        _fsync_dir(final.parent)
