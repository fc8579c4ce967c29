"""Re-hosting of upstream image results (``rehost_images = true`` in the catalogue).

An upstream's ``url`` results point at the provider's own storage, with the
provider's expiry. When a model re-hosts, each ``data[i].url`` of a unary images
response is fetched (http or https only, an ``image/*`` content type, at most
``MAX_BYTES``, within ``FETCH_SECONDS`` and the relay's deadline), stored in the
media store as local images are, and replaced by Portway's own signed, expiring
link. ``b64_json`` items, ``revised_prompt`` and every other field are kept as
they came. An image that cannot be fetched is a 502 (:class:`BadGateway`) in
Portway's own words: the provider's URL (it may carry a signature), its status and
the client library's exceptions go to the log, never into the error.

The URL comes from the upstream's answer, so it is not trusted: only public
addresses are fetched from unless the model allows more networks (see
:mod:`portway.serving.relay.address_guard`, which checks the addresses actually
connected to), redirects are followed by hand (at most ``MAX_REDIRECTS``, each
hop checked the same way), and nothing is kept alive or cached between fetches.
Through a proxy from the environment (``HTTPS_PROXY``...) the proxy connects, so
the name is checked as Portway resolves it just before.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import aiohttp
from aiohttp.helpers import proxies_from_env
from yarl import URL

from portway.backends.base import PNG_MAGIC
from portway.backends.upstream.http_client import proxy_for
from portway.errors import BadGateway
from portway.serving.media import MediaStore
from portway.serving.relay.address_guard import (
    AddressPolicy,
    AddressRefused,
    GuardedResolver,
    ip_literal,
)

log = logging.getLogger("portway.relay")

MAX_BYTES = 20 * 1024 * 1024
"""The largest upstream image re-hosted."""
FETCH_SECONDS = 60.0
"""The longest one image may take to fetch (the relay's deadline may cut it shorter)."""
MAX_REDIRECTS = 3
"""Redirects followed per image, each to an address checked like the first."""
REDIRECTS = frozenset({301, 302, 303, 307, 308})
PUBLIC_ONLY = AddressPolicy()


class RehostFailed(BadGateway):
    """502: an image the upstream pointed at could not be fetched or kept."""


class Rehoster:
    """Fetches upstream images and keeps them in ``media``; :meth:`close` when done."""

    def __init__(
        self,
        media: MediaStore,
        max_bytes: int = MAX_BYTES,
        fetch_seconds: float = FETCH_SECONDS,
    ) -> None:
        self.media = media
        self.max_bytes = max_bytes
        self.fetch_seconds = fetch_seconds
        self._sessions: dict[tuple[AddressPolicy, bool], aiohttp.ClientSession] = {}

    async def rehost(
        self,
        reply: dict[str, Any],
        *,
        model: str,
        base_url: str,
        ttl: int,
        until: float,
        policy: AddressPolicy = PUBLIC_ONLY,
    ) -> dict[str, Any]:
        """``reply`` (an images response) with each item's ``url`` replaced by a
        Portway link under ``base_url`` valid ``ttl`` seconds; RehostFailed if an
        image cannot be fetched by ``until`` (event loop time) from where ``policy``
        allows."""
        data = reply.get("data")
        if not isinstance(data, list):
            return reply
        items = [await self._item(item, model, base_url, ttl, until, policy) for item in data]
        return {**reply, "data": items}

    async def _item(
        self, item: object, model: str, base_url: str, ttl: int, until: float, policy: AddressPolicy
    ) -> Any:
        if not isinstance(item, dict) or not isinstance(item.get("url"), str):
            return item  # b64_json, or something this module does not know: as it came
        png = await self.fetch(item["url"], model, until, policy)
        link = await asyncio.to_thread(self.media.put, png, "png", ttl)
        return {**item, "url": base_url.rstrip("/") + link}

    async def fetch(
        self, url: str, model: str, until: float, policy: AddressPolicy = PUBLIC_ONLY
    ) -> bytes:
        """The image at ``url``: PNG bytes, or RehostFailed saying why not (in
        Portway's words: the upstream's status and errors go to the log only)."""
        target = _url(url, model)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(min(until, loop.time() + self.fetch_seconds)):
                data = await self._follow(target, model, policy)
        except TimeoutError as exc:
            raise RehostFailed(
                f"Fetching an image of '{model}' from its upstream took too long."
            ) from exc
        except AddressRefused as exc:
            log.warning("re-hosting an image of %s refused: %s", model, exc)
            raise _unfetchable(model) from exc
        except (aiohttp.ClientError, OSError) as exc:
            what = type(exc).__name__
            log.warning("re-hosting an image of %s from %s failed: %s", model, target.host, what)
            raise _unfetchable(model) from exc
        if not data.startswith(PNG_MAGIC):
            raise RehostFailed(
                f"An image of '{model}' from its upstream is not a PNG, which Portway re-hosts."
            )
        return data

    async def _follow(self, url: URL, model: str, policy: AddressPolicy) -> bytes:
        """GET ``url``, following at most ``MAX_REDIRECTS`` redirects, each checked."""
        for _ in range(MAX_REDIRECTS + 1):
            proxy, proxy_auth = proxy_for(str(url.origin()))
            await _check_address(url, policy, proxied=proxy is not None)
            session = self._session(policy, proxied=proxy is not None)
            async with session.get(
                url, allow_redirects=False, proxy=proxy, proxy_auth=proxy_auth
            ) as response:
                if response.status in REDIRECTS and "location" in response.headers:
                    url = _url(str(url.join(URL(response.headers["location"]))), model)
                    continue
                if response.status != 200:
                    log.warning(
                        "re-hosting an image of %s: %s answered HTTP %d",
                        model,
                        url.host,
                        response.status,
                    )
                    raise _unfetchable(model)
                kind = response.headers.get("content-type", "")
                if not kind.lower().startswith("image/"):
                    raise RehostFailed(
                        f"An image URL of '{model}' from its upstream is not an image."
                    )
                return await self._read(response, model)
        log.warning("re-hosting an image of %s: over %d redirects", model, MAX_REDIRECTS)
        raise _unfetchable(model)

    def _session(self, policy: AddressPolicy, *, proxied: bool) -> aiohttp.ClientSession:
        """The session for ``policy``: its resolver refuses what the policy does (the
        environment's proxies exempted when ``proxied``). No keep-alive and no DNS
        cache, so nothing checked under one model's policy serves another's."""
        key = (policy, proxied)
        session = self._sessions.get(key)
        if session is None or session.closed:
            trusted = _proxy_hosts() if proxied else frozenset()
            connector = aiohttp.TCPConnector(
                resolver=GuardedResolver(policy, trusted),
                use_dns_cache=False,
                force_close=True,
            )
            session = aiohttp.ClientSession(
                connector=connector, trust_env=False, timeout=aiohttp.ClientTimeout(total=None)
            )
            self._sessions[key] = session
        return session

    async def _read(self, response: aiohttp.ClientResponse, model: str) -> bytes:
        pieces: list[bytes] = []
        size = 0
        async for piece in response.content.iter_any():
            size += len(piece)
            if size > self.max_bytes:
                raise RehostFailed(
                    f"An image of '{model}' from its upstream is over {self.max_bytes} bytes."
                )
            pieces.append(piece)
        return b"".join(pieces)

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()


def _unfetchable(model: str) -> RehostFailed:
    return RehostFailed(f"An image of '{model}' could not be fetched from its upstream.")


def _url(url: str, model: str) -> URL:
    """``url`` if it is an http(s) URL with a host, else RehostFailed."""
    try:
        parsed = URL(url)
    except ValueError:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise RehostFailed(
            f"The upstream of '{model}' answered with an image URL that is not http(s)."
        )
    return parsed


async def _check_address(url: URL, policy: AddressPolicy, *, proxied: bool) -> None:
    """AddressRefused unless ``url``'s host may be fetched from. A name is checked
    here only when a proxy will resolve it (the resolver checks it otherwise, on
    the addresses it connects to); an IP literal, which no resolver sees, always."""
    host = url.host or ""
    literal = ip_literal(host)
    if literal is not None:
        addresses = [str(literal)]
    elif proxied:
        port = url.port or 0
        found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = [str(entry[4][0]) for entry in found]
    else:
        return
    if not addresses or not all(policy.permits(address) for address in addresses):
        raise AddressRefused(f"{host} is not an address images may be fetched from")


def _proxy_hosts() -> frozenset[str]:
    """The hosts of the proxies the environment names (trusted: the operator's)."""
    return frozenset(
        info.proxy.host for info in proxies_from_env().values() if info.proxy.host is not None
    )
