"""The HTTP client of the upstream leg.

aiohttp, not httpx: on the benchmark machine one relayed request costs about
125 µs of client CPU with aiohttp against 460 µs with httpx (unary; 150 against
610 µs streamed), measured in-process against the same stand-in upstream. That
difference is most of what Portway adds at concurrency 1 (BENCHMARKS.md).

One session (one connection pool, keep-alive) is shared by every upstream model.
Proxies come from the environment (``HTTPS_PROXY``, ``NO_PROXY`` and friends), as
with httpx: looked up once per endpoint here, because aiohttp's own ``trust_env``
looks them up (and ``~/.netrc``) in a worker thread on every request, two thread
hops that cost more than the rest of the client.
"""

from __future__ import annotations

import functools

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

MAX_CONNECTIONS = 4096
"""Upstream connections open at once, over all endpoints: each relayed request
holds one for its whole length (a long stream included), and a request beyond
this waits for one within its model's connect timeout."""
KEEPALIVE_SECONDS = 30.0


def open_session() -> aiohttp.ClientSession:
    """The shared session (call inside the event loop that will use it)."""
    connector = aiohttp.TCPConnector(
        limit=MAX_CONNECTIONS, limit_per_host=0, keepalive_timeout=KEEPALIVE_SECONDS
    )
    return aiohttp.ClientSession(
        connector=connector,
        trust_env=False,  # see proxy_for
        timeout=aiohttp.ClientTimeout(total=None),  # the relay times every step itself
        auto_decompress=True,
        raise_for_status=False,
    )


@functools.lru_cache(maxsize=1024)
def proxy_for(url: str) -> tuple[URL | None, aiohttp.BasicAuth | None]:
    """The proxy the environment names for requests to ``url`` (an endpoint's base
    URL), or (None, None) for a direct connection."""
    try:
        return get_env_proxy_for_url(URL(url))
    except LookupError:
        return None, None
