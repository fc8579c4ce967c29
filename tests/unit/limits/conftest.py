"""Both enforcers, for tests that must hold for each: in memory, and in Redis
(``PORTWAY_TEST_REDIS_URL``, default ``redis://127.0.0.1:6379/0``) under a key
prefix of the test's own, removed afterwards."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from portway.limits.limiter import Enforcer
from portway.limits.memory import MemoryEnforcer
from portway.limits.shared import RedisEnforcer
from tests.services import require_service

REDIS_URL = os.environ.get("PORTWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def redis_client() -> Redis:
    """A client of the test Redis, or the test skipped (failed under CI=true)."""
    client = Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        require_service("Redis", False, f"cannot connect to {REDIS_URL}: {exc!r}")
    return client


async def drop_prefix(client: Redis, prefix: str) -> None:
    async for key in client.scan_iter(match=prefix + "*"):
        await client.delete(key)


@pytest.fixture(params=["memory", "redis"])
async def enforcer(request: pytest.FixtureRequest) -> AsyncIterator[Enforcer]:
    if request.param == "memory":
        yield MemoryEnforcer()
        return
    client = await redis_client()
    prefix = f"portway-test-{secrets.token_hex(6)}:"
    found = RedisEnforcer(client, prefix)
    try:
        yield found
    finally:
        await drop_prefix(client, prefix)
        await found.close()
        await client.aclose()
