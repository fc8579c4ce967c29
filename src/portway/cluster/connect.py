"""Connections to Redis and NATS, and the clear error when one cannot be made."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from redis.asyncio import Redis

log = logging.getLogger("portway.cluster")

CONNECT_SECONDS = 5.0
"""How long a start waits for Redis or NATS before it fails."""


class ClusterUnavailable(RuntimeError):
    """Redis or NATS could not be reached; the message names which and where."""


async def connect_redis(url: str) -> Redis:
    """A Redis client for ``url`` that has answered a PING."""
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    try:
        client = Redis.from_url(url, socket_connect_timeout=CONNECT_SECONDS)
    except ValueError as exc:
        raise ClusterUnavailable(f"--redis-url {url!r} is not a Redis URL: {exc}") from exc
    try:
        await asyncio.wait_for(client.ping(), CONNECT_SECONDS)
    except (RedisError, OSError, TimeoutError) as exc:
        await client.aclose()
        raise ClusterUnavailable(f"Redis at {url} is unreachable: {_reason(exc)}") from exc
    return client


async def connect_nats(url: str, name: str) -> NATS:
    """A NATS connection to ``url`` named ``name`` that reconnects for ever once
    made; the first connection must succeed within ``CONNECT_SECONDS``."""
    from nats.aio.client import Client
    from nats.errors import Error as NatsError

    client = Client()
    failures: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        failures.append(exc)
        log.warning("NATS at %s: %s", url, _reason(exc))

    async def on_disconnect() -> None:
        if not client.is_closed:  # not our own close
            log.warning("NATS at %s: disconnected, reconnecting", url)

    async def on_reconnect() -> None:
        log.info("NATS at %s: reconnected", url)

    try:
        await asyncio.wait_for(
            client.connect(
                url,
                name=name,
                connect_timeout=int(CONNECT_SECONDS),
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                error_cb=on_error,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
            ),
            CONNECT_SECONDS,
        )
    except (TimeoutError, OSError, NatsError) as exc:
        cause = failures[-1] if failures else exc
        with contextlib.suppress(Exception):
            await client.close()  # stop its reconnection attempts
        raise ClusterUnavailable(f"NATS at {url} is unreachable: {_reason(cause)}") from exc
    return client


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
