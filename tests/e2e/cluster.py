"""What the end-to-end tests of several processes share: a scratch PostgreSQL
database of each test's own, the machine's Redis and NATS, and the flags that
join a cluster of each test's own (``PORTWAY_TEST_POSTGRES_URL``,
``PORTWAY_TEST_REDIS_URL``, ``PORTWAY_TEST_NATS_URL``). The fixtures that use
these are in ``tests/e2e/conftest.py``."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from tests.services import require_service
from tests.unit.cluster.services import (
    NATS_URL,
    REDIS_URL,
    cluster_name,
    require_redis_and_nats,
)

POSTGRES = os.environ.get("PORTWAY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

__all__ = [
    "NATS_URL",
    "POSTGRES",
    "REDIS_URL",
    "cluster_flags",
    "cluster_name",
    "require_redis_and_nats",
    "scratch_postgres_url",
]


def _admin(sql: str) -> None:
    """Run ``sql`` on the PostgreSQL server's maintenance connection."""
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(POSTGRES.replace("+asyncpg", ""), timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@contextmanager
def scratch_postgres_url() -> Iterator[str]:
    """The ``--database-url`` of a fresh database, dropped on exit; skips (fails
    under CI=true) when PostgreSQL is absent."""
    import asyncpg

    name = f"portway_e2e_{secrets.token_hex(4)}"
    try:
        _admin(f'CREATE DATABASE "{name}"')
    except (OSError, asyncpg.PostgresError) as exc:
        require_service("postgresql", False, repr(exc))
    base = POSTGRES.replace("+asyncpg", "").rsplit("/", 1)[0]
    try:
        yield f"{base.replace('postgresql://', 'postgresql+asyncpg://')}/{name}"
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def cluster_flags() -> tuple[str, ...]:
    """``portway serve``'s flags that join a cluster of the caller's own on the
    machine's Redis and NATS; skips (fails under CI=true) when either is absent."""
    require_redis_and_nats()
    return ("--redis-url", REDIS_URL, "--nats-url", NATS_URL, "--cluster-name", cluster_name())
