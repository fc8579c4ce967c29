"""Fixtures every unit test may use: ``store`` on each database (``db_url``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from portway.store import Store
from tests.services import require_service
from tests.unit.databases import POSTGRES_URL, PostgresServer, asyncpg_dsn, scratch_database


@pytest.fixture(scope="session")
async def postgres_server() -> PostgresServer:
    """Probe the PostgreSQL server once per session."""
    url = make_url(POSTGRES_URL)
    try:
        conn = await asyncpg.connect(asyncpg_dsn(url), timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        where = url.render_as_string(hide_password=True)
        return PostgresServer(None, f"cannot connect to {where}: {exc!r}")
    await conn.close()
    return PostgresServer(url, "")


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
async def db_url(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_server: PostgresServer
) -> AsyncIterator[str]:
    """URL of an empty database: SQLite in tmp_path, or a scratch PostgreSQL one."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'data' / 'portway.db'}"
    else:
        require_service("postgresql", postgres_server.url is not None, postgres_server.reason)
        assert postgres_server.url is not None
        async with scratch_database(postgres_server.url) as url:
            yield url


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    opened = await Store.open(db_url)
    try:
        yield opened
    finally:
        await opened.close()
