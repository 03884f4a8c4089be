"""The optional original → pseudonym map (off by default).

Only a site that enables linkage keeps it, e.g. to send a result back to the right patient. The
original identifier is encrypted with AES-256-GCM under its OWN key (``MEDSIGHT_LINKAGE_KEY`` or
``$MEDSIGHT_HOME/keys/linkage.key``), separate from the blob key, so the people and machines that
handle images need not hold the key that re-identifies them. The key is only created when linkage
is first used. The (kind, pseudonym) pair is bound in as associated data: a ciphertext moved to
another row does not decrypt.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select

from medsight.keys import load_or_create_key
from medsight.store.errors import BlobIntegrityError
from medsight.store.models import LinkageEntry

if TYPE_CHECKING:
    from medsight.store.store import Store

NONCE_BYTES = 12


def _associated(kind: str, pseudonym: str) -> bytes:
    return f"medsight-linkage\0{kind}\0{pseudonym}".encode()


class Linkage:
    def __init__(self, store: Store, key: bytes | None = None) -> None:
        self.store = store
        self._aead = AESGCM(key if key is not None else load_or_create_key("linkage", "MEDSIGHT_LINKAGE_KEY"))

    def remember(self, kind: str, original: str, pseudonym: str) -> None:
        """Keep ``original`` for (kind, pseudonym); an entry already there is kept as it is."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, original.encode(), _associated(kind, pseudonym))
        with self.store.write() as session:
            exists = session.scalar(
                select(LinkageEntry.id).where(LinkageEntry.kind == kind, LinkageEntry.pseudonym == pseudonym)
            )
            if exists is None:
                session.add(LinkageEntry(kind=kind, pseudonym=pseudonym, original_encrypted=sealed))

    def original_of(self, kind: str, pseudonym: str) -> str | None:
        with self.store.session() as session:
            sealed = session.scalar(
                select(LinkageEntry.original_encrypted).where(
                    LinkageEntry.kind == kind, LinkageEntry.pseudonym == pseudonym
                )
            )
        if sealed is None:
            return None
        try:
            plain = self._aead.decrypt(
                sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], _associated(kind, pseudonym)
            )
        except InvalidTag:
            raise BlobIntegrityError(
                f"the linkage entry for {kind} {pseudonym} does not decrypt: wrong MEDSIGHT_LINKAGE_KEY, or damaged."
            ) from None
        return plain.decode()
