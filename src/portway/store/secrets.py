"""Secrets (upstream API keys): encrypted with a key kept in the data dir, stored
in the database as ciphertext.

The key is ``secrets.key`` in the data dir (a Fernet key: AES-128-CBC with an
HMAC-SHA256, made on first use, mode 0600). The database alone does not reveal
a secret; every server that reads the database needs the same key file (copy it
to each node's data dir when several share a PostgreSQL database).
"""

from __future__ import annotations

import re
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from portway.private import private_dir, read_or_create
from portway.store.db import Store

KEY_FILE = "secrets.key"
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


class SecretError(Exception):
    """A secret cannot be stored or read; the message says why (never its value)."""


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise SecretError(f"a secret name is 1-100 letters, digits, '_', '.' or '-': {name!r}")
    return name


def _read_or_create_key(path: Path) -> bytes:
    """The key in ``path``, made first if there is none; concurrent first
    starts all read the same whole key (see :func:`portway.private.read_or_create`)."""
    private_dir(path.parent)
    return read_or_create(path, lambda: Fernet.generate_key() + b"\n").strip()


class SecretBox:
    """Encrypts and decrypts secret values with the data dir's key."""

    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except ValueError as exc:
            raise SecretError(f"the secrets key is not a Fernet key: {exc}") from exc

    @classmethod
    def open(cls, data_dir: Path) -> SecretBox:
        """The box of ``data_dir`` (its key file is made on first use)."""
        return cls(_read_or_create_key(data_dir / KEY_FILE))

    def encrypt(self, value: str) -> bytes:
        return self._fernet.encrypt(value.encode("utf-8"))

    def decrypt(self, ciphertext: bytes, name: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext).decode("utf-8")
        except InvalidToken as exc:
            raise SecretError(
                f"secret {name!r} cannot be decrypted with this data dir's {KEY_FILE}"
            ) from exc


async def set_secret(store: Store, box: SecretBox, name: str, value: str) -> None:
    """Store ``value`` encrypted under ``name`` (replacing an earlier one)."""
    if not value:
        raise SecretError("a secret's value cannot be empty")
    await store.put_secret(check_name(name), box.encrypt(value))


async def read_secret(store: Store, box: SecretBox, name: str) -> str | None:
    """The value of secret ``name``, or None if there is none."""
    ciphertext = await store.get_secret(check_name(name))
    return None if ciphertext is None else box.decrypt(ciphertext, name)
