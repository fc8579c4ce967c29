"""Generated files, served without a token under signed links that expire.

A file lives at ``{data_dir}/media/{expires}-{id}.{ext}``; its link is
``/media/{id}.{ext}?expires={expires}&signature={hex}``, where the signature is
HMAC-SHA256 over ``"{id}.{ext}:{expires}"`` with a key made once and kept in
``{data_dir}/media.key`` (so links survive restarts and hold across processes
that share the data dir). A link with a wrong signature, or past its expiry, is
a 404; expired files are removed when asked for and by a periodic sweep.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
import time
from pathlib import Path
from urllib.parse import urlencode

from portway.aio import cancel_and_wait
from portway.digits import ascii_decimal
from portway.errors import NotFound
from portway.private import private_dir, read_or_create, write_private

log = logging.getLogger("portway.media")

NAME = re.compile(r"(?P<id>[A-Za-z0-9_-]{16,64})\.(?P<ext>png)")
STORED = re.compile(r"(?P<expires>[0-9]{1,12})-(?P<name>[A-Za-z0-9_-]{16,64}\.png)")
MEDIA_TYPES = {"png": "image/png"}


KEY_BYTES = 32


class MediaKeyError(ValueError):
    """``media.key`` holds no usable key."""


def _load_key(path: Path) -> bytes:
    """The signing key in ``path``, made first if there is none; concurrent
    first starts all read the same whole key."""
    text = read_or_create(path, lambda: secrets.token_hex(KEY_BYTES).encode()).strip()
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) < KEY_BYTES:
        raise MediaKeyError(
            f"{path} holds no {KEY_BYTES}-byte hex key; remove it to make a new one "
            "(links made with the old key stop working)"
        )
    return key


class MediaStore:
    def __init__(self, root: Path, key: bytes, sweep_seconds: float = 60.0) -> None:
        self.root = root
        self._key = key
        self._sweep_seconds = sweep_seconds
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def open(cls, data_dir: Path, sweep_seconds: float = 60.0) -> MediaStore:
        root = private_dir(data_dir / "media")
        return cls(root, _load_key(data_dir / "media.key"), sweep_seconds)

    def _sign(self, name: str, expires: int) -> str:
        message = f"{name}:{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def put(self, data: bytes, ext: str, ttl: int) -> str:
        """Store ``data``; return its link (path and query), valid ``ttl`` seconds."""
        name = f"{secrets.token_urlsafe(24)}.{ext}"
        expires = int(time.time()) + ttl
        write_private(self.root / f"{expires}-{name}", data)
        query = urlencode({"expires": expires, "signature": self._sign(name, expires)})
        return f"/media/{name}?{query}"

    def locate(self, name: str, expires: str, signature: str) -> tuple[Path, str]:
        """The file a link names and its media type; NotFound for a bad or expired link."""
        found = NAME.fullmatch(name)
        until = ascii_decimal(expires, max_digits=12)
        if not found or until is None:
            raise NotFound("No such file.")
        if not hmac.compare_digest(self._sign(name, until), signature):
            raise NotFound("No such file.")
        path = self.root / f"{until}-{name}"
        if until <= time.time():
            path.unlink(missing_ok=True)
            raise NotFound("This link has expired.", code="link_expired")
        if not path.is_file():
            raise NotFound("No such file.")
        return path, MEDIA_TYPES[found["ext"]]

    def sweep(self, now: float | None = None) -> int:
        """Remove every expired file; the number removed."""
        now = time.time() if now is None else now
        removed = 0
        for path in self.root.iterdir():
            stored = STORED.fullmatch(path.name)
            if stored and int(stored["expires"]) <= now:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    async def start(self) -> None:
        self._task = asyncio.create_task(self._sweep_forever(), name="media-sweep")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _sweep_forever(self) -> None:
        while True:
            try:
                removed = await asyncio.to_thread(self.sweep)
            except OSError:
                log.exception("sweeping %s failed", self.root)
            else:
                if removed:
                    log.info("removed %d expired media files", removed)
            await asyncio.sleep(self._sweep_seconds)
