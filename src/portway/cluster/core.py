"""The :class:`Cluster`: what this process shares with the other processes of its
cluster. Every process has one, so no code asks "are we clustered?" by testing
for None:

- :class:`LocalCluster` when Portway runs as one process: events go to this
  process's own subscribers; there is no Redis or NATS.
- :class:`SharedCluster` with ``--redis-url`` and ``--nats-url``: the Redis client
  (``redis.asyncio``) and the NATS connection, opened once and shared by whoever
  needs them (limits, runners); events travel over NATS to every process.

Redis keys and NATS subjects are prefixed with the cluster's name
(:meth:`Cluster.key`, :meth:`Cluster.subject`), so that clusters, or test runs,
sharing one Redis and one NATS never see each other's.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from portway.cluster.config import check_settings
from portway.cluster.connect import connect_nats, connect_redis
from portway.settings import Settings

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg
    from redis.asyncio import Redis

log = logging.getLogger("portway.cluster")

PUBLISH_SECONDS = 2
"""How long publishing an event waits for the NATS server to have it."""

Handler = Callable[[bytes], Awaitable[None]]
"""Receives one event's payload."""


def process_name() -> str:
    """This process's name in the cluster: host, pid and a random tag (two
    containers can both be pid 1, and pids are reused)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Cluster:
    """This process's view of its cluster (see the module)."""

    shared = False
    """Whether other processes share this state (Redis and NATS in use)."""

    def __init__(self, name: str, process: str) -> None:
        self.name = name
        """The cluster's name: the prefix of its keys and subjects."""
        self.process = process
        """This process's name, unique in the cluster."""

    def key(self, *parts: str) -> str:
        """A Redis key of this cluster: ``NAME:part:part``."""
        return ":".join((self.name, *parts))

    def subject(self, *parts: str) -> str:
        """A NATS subject of this cluster: ``NAME.part.part``."""
        return ".".join((self.name, *parts))

    async def publish(self, topic: str, payload: bytes) -> None:
        """Deliver ``payload`` to every process's subscribers of ``topic`` (this
        process's included). Best effort: with NATS out of reach the event is
        lost, logged, and not an error for the caller (a revocation still shows
        everywhere within the token cache's 2 s)."""
        raise NotImplementedError

    async def subscribe(self, topic: str, handler: Handler) -> None:
        """Call ``handler`` with each payload published on ``topic`` from now on."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release the connections (nothing for a local cluster)."""


class LocalCluster(Cluster):
    """One process: events stay in it."""

    def __init__(self, name: str, process: str) -> None:
        super().__init__(name, process)
        self._handlers: dict[str, list[Handler]] = {}

    async def publish(self, topic: str, payload: bytes) -> None:
        for handler in self._handlers.get(topic, ()):
            await handler(payload)

    async def subscribe(self, topic: str, handler: Handler) -> None:
        self._handlers.setdefault(topic, []).append(handler)


class SharedCluster(Cluster):
    """Many processes, sharing state through ``redis`` and events through ``nats``."""

    shared = True

    def __init__(self, name: str, process: str, redis: Redis, nats: NATS) -> None:
        super().__init__(name, process)
        self.redis = redis
        """The cluster's Redis (``redis.asyncio``); prefix keys with :meth:`key`."""
        self.nats = nats
        """The cluster's NATS connection; prefix subjects with :meth:`subject`."""

    async def publish(self, topic: str, payload: bytes) -> None:
        from nats.errors import Error as NatsError

        try:
            await self.nats.publish(self.subject("events", topic), payload)
            await self.nats.flush(timeout=PUBLISH_SECONDS)  # at the server when this returns
        except (NatsError, TimeoutError, OSError) as exc:
            log.warning("event %s not delivered to the cluster: %s", topic, exc or type(exc))

    async def subscribe(self, topic: str, handler: Handler) -> None:
        async def deliver(message: Msg) -> None:
            try:
                await handler(message.data)
            except Exception:
                log.exception("event handler for %s failed", topic)

        await self.nats.subscribe(self.subject("events", topic), cb=deliver)
        await self.nats.flush()  # the server has the subscription when this returns

    async def close(self) -> None:
        try:
            await self.nats.close()
        finally:
            await self.redis.aclose()


async def open_cluster(settings: Settings) -> Cluster:
    """This process's cluster: shared when ``settings`` give Redis and NATS.

    Raises :class:`~portway.cluster.config.ClusterConfigError` for settings that
    cannot run, :class:`~portway.cluster.connect.ClusterUnavailable` when Redis or
    NATS cannot be reached."""
    check_settings(settings)
    process = process_name()
    if not (settings.redis_url and settings.nats_url):
        return LocalCluster(settings.cluster_name, process)
    redis = await connect_redis(settings.redis_url)
    try:
        nats = await connect_nats(settings.nats_url, f"portway {process}")
    except BaseException:
        await redis.aclose()
        raise
    log.info("process %s joined cluster %s", process, settings.cluster_name)
    return SharedCluster(settings.cluster_name, process, redis, nats)


async def probe(settings: Settings) -> None:
    """Check, before serving, that ``settings`` can run: open the cluster and close it."""
    cluster = await open_cluster(settings)
    await cluster.close()
