"""Credentials sealed at rest with AES-GCM (the eventsourcing library's cipher).

Secrets never enter the journal: events record that credentials were set or
rotated, and the sealed value lives in a table of its own, written in the same
transaction. Several keys may be configured; the first seals, any of them opens,
so the key can be rotated without relinking (``caljournal secrets rotate-key``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from eventsourcing.cipher import AESCipher
from eventsourcing.utils import Environment

KEY_BYTES = 32
_PREFIX = "v1"


class SecretKeyError(Exception):
    """A key is missing, malformed, exposed, or none of the keys opens a secret."""


@dataclass(frozen=True)
class Credentials:
    """How to authenticate to a calendar server; ``repr`` never shows secrets."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    bearer_token: str | None = field(default=None, repr=False)
    #: The query string of the link URL (``token=...``): sealed like a password
    #: and put back into request URLs only when connecting.
    url_query: str | None = field(default=None, repr=False)

    def to_json(self) -> bytes:
        """Return the credentials as JSON bytes (for sealing only)."""
        return json.dumps(
            {
                "username": self.username,
                "password": self.password,
                "bearer_token": self.bearer_token,
                "url_query": self.url_query,
            }
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Credentials:
        """Return credentials from :meth:`to_json` output (older ones lack ``url_query``)."""
        values = json.loads(data)
        return cls(
            values["username"], values["password"], values["bearer_token"], values.get("url_query")
        )

    def secrets(self) -> list[str]:
        """Return the secret values (to keep them out of every output)."""
        return [s for s in (self.password, self.bearer_token, self.url_query) if s]


def _key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:12]


class SecretBox:
    """Seal and open secrets with a list of keys (first one current)."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise SecretKeyError("no secret key configured")
        self._ciphers: dict[str, AESCipher] = {}
        self.current_id = ""
        for number, encoded in enumerate(keys):
            try:
                raw = base64.b64decode(encoded.strip(), validate=True)
            except (binascii.Error, ValueError):
                raise SecretKeyError(f"secret key #{number + 1} is not base64") from None
            if len(raw) not in (16, 24, 32):
                raise SecretKeyError(
                    f"secret key #{number + 1} has {len(raw)} bytes; use 16, 24 or 32"
                )
            key_id = _key_id(raw)
            self._ciphers[key_id] = AESCipher(Environment(env={"CIPHER_KEY": encoded.strip()}))
            if number == 0:
                self.current_id = key_id

    def seal(self, plaintext: bytes) -> str:
        """Return ``plaintext`` encrypted with the current key."""
        sealed = self._ciphers[self.current_id].encrypt(plaintext)
        return f"{_PREFIX}:{self.current_id}:{base64.b64encode(sealed).decode()}"

    def open(self, sealed: str) -> bytes:
        """Return the plaintext of a sealed value.

        :raises SecretKeyError: when no configured key sealed it, or it was altered.
        """
        try:
            prefix, key_id, body = sealed.split(":", 2)
        except ValueError:
            raise SecretKeyError("a stored secret is damaged") from None
        cipher = self._ciphers.get(key_id)
        if prefix != _PREFIX or cipher is None:
            raise SecretKeyError(
                f"a stored secret was sealed with key {key_id}, which is not configured; "
                "add that key to CALJOURNAL_SECRET_KEYS (after the current one)"
            )
        try:
            return cipher.decrypt(base64.b64decode(body))
        except ValueError:
            raise SecretKeyError("a stored secret is damaged or was altered") from None

    def is_current(self, sealed: str) -> bool:
        """Return True when ``sealed`` was sealed with the current key."""
        return sealed.split(":", 2)[1:2] == [self.current_id]


def new_key() -> str:
    """Return a fresh random key, base64-encoded."""
    return AESCipher.create_key(KEY_BYTES)


def load_keys(configured: str | None, key_file: Path) -> list[str]:
    """Return the configured keys, or the local key file's (created 0600 if missing).

    :raises SecretKeyError: when the key file is readable by others or malformed.
    """
    if configured:
        return [k for k in (part.strip() for part in configured.split(",")) if k]
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(new_key() + "\n")
    mode = stat.S_IMODE(key_file.stat().st_mode)
    if mode & 0o077:
        raise SecretKeyError(
            f"the key file {key_file} is readable by others (mode {mode:o}); "
            f"run: chmod 600 {key_file}"
        )
    keys = [line.strip() for line in key_file.read_text().splitlines() if line.strip()]
    if not keys:
        raise SecretKeyError(f"the key file {key_file} is empty")
    return keys
