"""Keyed, repeatable pseudonyms: UIDs, patient IDs and per-patient date shifts.

Everything here is HMAC-SHA256 keyed with the site secret, so the same input gives the same output on
every run and every machine of one site (studies and series stay grouped across uploads), while
nobody without the secret can recompute or reverse the mapping. Each kind of value has its own domain
label, so a patient ID and a UID that happen to be equal do not map to related outputs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from medsight.errors import ConfigError

PSEUDONYM_PREFIX = "MS-"
DEFAULT_MAX_SHIFT_DAYS = 365


def _check_secret(secret: bytes) -> bytes:
    if not isinstance(secret, bytes | bytearray) or len(secret) < 16:
        raise ConfigError("the de-identification secret must be at least 16 bytes (the site key has 32).")
    return bytes(secret)


def _digest(secret: bytes, domain: str, value: str) -> bytes:
    message = domain.encode() + b"\x00" + value.encode("utf-8")
    return hmac.new(_check_secret(secret), message, hashlib.sha256).digest()


def pseudonymise_uid(uid: str, secret: bytes) -> str:
    """A ``2.25.<decimal>`` UID (at most 44 characters) derived from ``uid`` and the secret.

    The 128 bits are shaped as a version-8 UUID (RFC 9562), the form PS3.5 B.2 allows under ``2.25``.
    """
    uid = str(uid).strip().rstrip("\x00")
    number = int.from_bytes(_digest(secret, "uid", uid)[:16], "big")
    number = (number & ~(0xF << 76)) | (0x8 << 76)  # version 8: custom
    number = (number & ~(0x3 << 62)) | (0x2 << 62)  # RFC variant
    return f"2.25.{number}"


def patient_pseudonym(patient_id: str, secret: bytes) -> str:
    """``MS-`` followed by 12 base32 characters (60 bits), e.g. ``MS-K3Q7ZD2MBX4P``."""
    code = base64.b32encode(_digest(secret, "patient", patient_id.strip())).decode("ascii")
    return PSEUDONYM_PREFIX + code[:12]


def date_shift_days(patient_id: str, secret: bytes, max_days: int = DEFAULT_MAX_SHIFT_DAYS) -> int:
    """The whole-day shift applied to all of one patient's dates: an integer in ``-max_days..-1``.

    Derived from the original patient ID, so every study of the patient moves by the same amount and
    intervals between them are kept.
    """
    value = int.from_bytes(_digest(secret, "date-shift", patient_id.strip())[:8], "big")
    return -(1 + value % max_days)
