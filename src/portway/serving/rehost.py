"""Re-hosting of upstream image results (``rehost_images = true`` in the catalogue).

An upstream's ``url`` results point at the provider's own storage, with the
provider's expiry. When a model re-hosts, each ``data[i].url`` of a unary images
response is fetched (http or https only, an ``image/*`` content type, at most
``MAX_BYTES``, within ``FETCH_SECONDS`` and the relay's deadline), stored in the
media store as local images are, and replaced by Portway's own signed, expiring
link. ``b64_json`` items, ``revised_prompt`` and every other field are kept as
they came. An image that cannot be fetched is a 502 (:class:`BadGateway`); the
provider's URL is never put into the error (it may carry a signature).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit

import httpx

from portway.errors import BadGateway
from portway.serving.media import MediaStore

log = logging.getLogger("portway.relay")

MAX_BYTES = 20 * 1024 * 1024
"""The largest upstream image re-hosted."""
FETCH_SECONDS = 60.0
"""The longest one image may take to fetch (the relay's deadline may cut it shorter)."""
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class RehostFailed(BadGateway):
    """502: an image the upstream pointed at could not be fetched or kept."""


class Rehoster:
    """Fetches upstream images with ``client`` and keeps them in ``media``."""

    def __init__(
        self,
        media: MediaStore,
        client: httpx.AsyncClient,
        max_bytes: int = MAX_BYTES,
        fetch_seconds: float = FETCH_SECONDS,
    ) -> None:
        self.media = media
        self.client = client
        self.max_bytes = max_bytes
        self.fetch_seconds = fetch_seconds

    async def rehost(
        self, reply: dict[str, Any], *, model: str, base_url: str, ttl: int, until: float
    ) -> dict[str, Any]:
        """``reply`` (an images response) with each item's ``url`` replaced by a
        Portway link under ``base_url`` valid ``ttl`` seconds; RehostFailed if an
        image cannot be fetched by ``until`` (event loop time)."""
        data = reply.get("data")
        if not isinstance(data, list):
            return reply
        items = [await self._item(item, model, base_url, ttl, until) for item in data]
        return {**reply, "data": items}

    async def _item(self, item: object, model: str, base_url: str, ttl: int, until: float) -> Any:
        if not isinstance(item, dict) or not isinstance(item.get("url"), str):
            return item  # b64_json, or something this module does not know: as it came
        png = await self.fetch(item["url"], model, until)
        link = await asyncio.to_thread(self.media.put, png, "png", ttl)
        return {**item, "url": base_url.rstrip("/") + link}

    async def fetch(self, url: str, model: str, until: float) -> bytes:
        """The image at ``url``: PNG bytes, or RehostFailed saying why not."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RehostFailed(
                f"The upstream of '{model}' answered with an image URL that is not http(s)."
            )
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(min(until, loop.time() + self.fetch_seconds)):
                data = await self._download(url, model)
        except TimeoutError as exc:
            raise RehostFailed(
                f"Fetching an image of '{model}' from its upstream took too long."
            ) from exc
        except httpx.HTTPError as exc:
            what = type(exc).__name__
            log.info("re-hosting an image of %s from %s failed: %s", model, parts.hostname, what)
            raise RehostFailed(
                f"An image of '{model}' could not be fetched from its upstream ({what})."
            ) from exc
        if not data.startswith(PNG_SIGNATURE):
            raise RehostFailed(
                f"An image of '{model}' from its upstream is not a PNG, which Portway re-hosts."
            )
        return data

    async def _download(self, url: str, model: str) -> bytes:
        async with self.client.stream("GET", url, follow_redirects=True) as response:
            if response.status_code != 200:
                raise RehostFailed(
                    f"An image of '{model}' could not be fetched from its upstream "
                    f"(HTTP {response.status_code})."
                )
            kind = response.headers.get("content-type", "")
            if not kind.lower().startswith("image/"):
                raise RehostFailed(f"An image URL of '{model}' from its upstream is not an image.")
            return await self._read(response, model)

    async def _read(self, response: httpx.Response, model: str) -> bytes:
        pieces: list[bytes] = []
        size = 0
        async for piece in response.aiter_bytes():
            size += len(piece)
            if size > self.max_bytes:
                raise RehostFailed(
                    f"An image of '{model}' from its upstream is over {self.max_bytes} bytes."
                )
            pieces.append(piece)
        return b"".join(pieces)
