"""Personal access token format.

A token is ``pwt_`` + 40 base62 characters of randomness (238 bits) + a 6
character base62 CRC-32 checksum of those 40. A malformed token is refused by
:func:`parse` without a database look-up; only the SHA-256 of a token is stored.
"""

from __future__ import annotations

import hashlib
import secrets
import string
import zlib

PREFIX = "pwt_"
ALPHABET = string.digits + string.ascii_letters
BODY_LENGTH = 40
CHECKSUM_LENGTH = 6
TOKEN_LENGTH = len(PREFIX) + BODY_LENGTH + CHECKSUM_LENGTH
SCOPES = ("inference", "runner", "admin")
DEFAULT_SCOPES = ("inference",)


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        chars.append(ALPHABET[digit])
    return "".join(reversed(chars))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode("ascii")), CHECKSUM_LENGTH)


def generate() -> str:
    """A new random token."""
    body = "".join(secrets.choice(ALPHABET) for _ in range(BODY_LENGTH))
    return PREFIX + body + _checksum(body)


def is_well_formed(token: str) -> bool:
    """Prefix, length, alphabet and checksum are right (no database involved)."""
    if len(token) != TOKEN_LENGTH or not token.startswith(PREFIX):
        return False
    rest = token[len(PREFIX) :]
    if not all(char in ALPHABET for char in rest):
        return False
    body, checksum = rest[:BODY_LENGTH], rest[BODY_LENGTH:]
    return secrets.compare_digest(_checksum(body), checksum)


def digest(token: str) -> bytes:
    """What the store keeps of a token."""
    return hashlib.sha256(token.encode("ascii")).digest()
