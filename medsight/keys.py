"""Secret keys: read from an environment variable, or from a key file made on first use.

Key files live in ``$MEDSIGHT_HOME/keys/NAME.key`` with 0600 permissions and never enter the
repository, logs or error messages. An environment variable (hex or base64url) wins over the
file, so a deployment can keep keys in its secret store.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path

from medsight.errors import ConfigError
from medsight.paths import medsight_home

KEY_BYTES = 32


def key_file(name: str) -> Path:
    return medsight_home() / "keys" / f"{name}.key"


def _decode(value: str, source: str) -> bytes:
    value = value.strip()
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (binascii.Error, ValueError) as err:
            raise ConfigError(f"{source}: not a hex or base64 key.") from err
    if len(raw) != KEY_BYTES:
        raise ConfigError(f"{source}: a key must be {KEY_BYTES} bytes, this one is {len(raw)}.")
    return raw


def load_or_create_key(name: str, env_var: str) -> bytes:
    """The 32-byte key ``name``: from ``env_var`` if set, else the key file (created on first use)."""
    if os.environ.get(env_var):
        return _decode(os.environ[env_var], env_var)
    path = key_file(name)
    if path.exists():
        return _decode(path.read_text(), str(path))
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others, even briefly
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(KEY_BYTES) + "\n")
    return _decode(path.read_text(), str(path))
