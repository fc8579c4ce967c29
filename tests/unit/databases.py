"""The databases the unit tests run against: SQLite in a temporary directory, and
PostgreSQL (``$PORTWAY_TEST_POSTGRES_URL``, default: the local ``test`` database,
trust auth) in a scratch database of its own. The fixtures that use these are in
``tests/unit/conftest.py``."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy.engine import URL

from portway.store import UsageRecord

POSTGRES_URL = os.environ.get(
    "PORTWAY_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
T0 = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


@dataclass(frozen=True)
class PostgresServer:
    url: URL | None
    reason: str


def asyncpg_dsn(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@asynccontextmanager
async def scratch_database(server_url: URL) -> AsyncIterator[str]:
    """A freshly created, uniquely named database, dropped on exit."""
    name = f"portway_test_{os.getpid()}_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(asyncpg_dsn(server_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield server_url.set(database=name).render_as_string(hide_password=False)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def token_hash(seed: str) -> bytes:
    return hashlib.sha256(seed.encode()).digest()


def usage(request_id: str, **changes: Any) -> UsageRecord:
    record = UsageRecord(
        request_id=request_id,
        user_id=None,
        token_id=None,
        endpoint="/v1/chat/completions",
        model="gemma",
        version_id="v1",
        prompt_tokens=10,
        completion_tokens=5,
        status="completed",
        error_code=None,
        end_user=None,
        latency_ms=120,
        started_at=T0,
        ended_at=T0 + timedelta(milliseconds=120),
    )
    return replace(record, **changes)
