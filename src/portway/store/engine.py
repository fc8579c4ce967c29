"""The engine under :class:`~portway.store.db.Store`: database URLs, SQLite's
pragmas and transactions, migrations, and :class:`Database`, the base every part
of the store reads and writes through.

SQLite (``sqlite+aiosqlite``, the default, single node) runs in WAL mode with
foreign keys on and a busy timeout; PostgreSQL (``postgresql+asyncpg``) is the
multi-node choice. :meth:`Database.open` applies the Alembic migrations shipped in
:mod:`portway.store.migrations`, serialised across processes (an advisory lock on
PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so several servers can start at once.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from alembic import command
from alembic.config import Config
from sqlalchemy import Table, event, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.dml import Insert

from portway.private import private_dir, private_file

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Key for pg_advisory_xact_lock around migrations and the first admin's
# creation: "portway" in ASCII.
_PG_MIGRATION_LOCK = 0x706F727477617900

_SQLITE_BUSY_TIMEOUT_MS = 10_000
_SQLITE_PRAGMAS = (
    f"PRAGMA busy_timeout = {_SQLITE_BUSY_TIMEOUT_MS}",
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA foreign_keys = ON",
)
# Execution option naming the statement that opens a SQLite transaction.
_SQLITE_BEGIN = "portway_sqlite_begin"

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


def utc_now() -> datetime:
    return datetime.now(UTC)


def require_aware(value: datetime | None, what: str) -> None:
    """Reject naive datetimes up front (instead of as a SQLAlchemy StatementError)."""
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got {value!r}")


# --------------------------------------------------------------------------- engine


def normalise_url(url: str | URL) -> URL:
    """Parse ``url`` and pick the async driver: ``sqlite://`` becomes
    ``sqlite+aiosqlite://``, ``postgres[ql]://`` becomes ``postgresql+asyncpg://``.

    Raises ``ValueError`` for any other database.
    """
    parsed = make_url(url)
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ValueError(
            f"unsupported database URL {parsed.render_as_string()!r}: "
            "use sqlite+aiosqlite:///path or postgresql+asyncpg://..."
        )
    return parsed.set(drivername=driver)


def _sqlite_file(url: URL) -> Path | None:
    """The database file of a SQLite URL, or None for in-memory / URI forms."""
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    """Take over transaction control from the driver and set the pragmas."""
    dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, see below
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _SQLITE_PRAGMAS:
            _execute_pragma(cursor, pragma)
    finally:
        cursor.close()


def _execute_pragma(cursor: Any, pragma: str, attempts: int = 100) -> None:
    """Run ``pragma``, retrying while another connection holds the lock: SQLite
    answers a journal-mode change on a new file with "locked" at once, without
    waiting for the busy timeout."""
    for attempt in range(attempts):
        try:
            cursor.execute(pragma)
            return
        except sqlite3.OperationalError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05)


def _on_sqlite_begin(conn: Connection) -> None:
    """Open a real transaction (reads included); writers use ``BEGIN IMMEDIATE``
    so they queue on the busy timeout instead of failing on lock upgrade."""
    conn.exec_driver_sql(conn.get_execution_options().get(_SQLITE_BEGIN, "BEGIN"))


def _create_engine(url: URL) -> AsyncEngine:
    """An async engine for ``url`` (already normalised), with SQLite hooks."""
    if url.get_backend_name() == "postgresql":
        return create_async_engine(url, pool_pre_ping=True)
    engine = create_async_engine(url)
    event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
    event.listen(engine.sync_engine, "begin", _on_sqlite_begin)
    return engine


# ----------------------------------------------------------------------- migrations


def _alembic_config(connection: Connection) -> Config:
    """An Alembic config built from code: no alembic.ini involved."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    config.attributes["connection"] = connection
    return config


def _upgrade_to_head(connection: Connection) -> None:
    command.upgrade(_alembic_config(connection), "head")


async def migrate(engine: AsyncEngine) -> None:
    """Upgrade the database behind ``engine`` to the newest revision.

    Runs in one transaction. On PostgreSQL that transaction first takes an
    advisory lock, so concurrent callers run one after the other and the later
    ones find nothing to do. On SQLite, pass an engine whose transactions start
    with ``BEGIN IMMEDIATE`` for the same effect (``Store.open`` does).
    """
    async with engine.begin() as conn:
        await take_turns(conn)
        await conn.run_sync(_upgrade_to_head)


async def take_turns(conn: AsyncConnection) -> None:
    """Make the transaction on ``conn`` wait until no other process is migrating
    or making the first admin, and hold them off until it ends: on PostgreSQL the
    migrations' advisory lock; on SQLite a write transaction (``BEGIN
    IMMEDIATE``) already excludes every other writer."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})


# --------------------------------------------------------------------------- base


class Database:
    """An async engine and how this project uses it: reads, writes (one at a time on
    an in-memory SQLite database) and migrations. Create with :meth:`open`."""

    def __init__(self, engine: AsyncEngine) -> None:
        """Wrap ``engine``; prefer :meth:`open`, which also migrates."""
        self._engine = engine
        # On SQLite, write transactions start with BEGIN IMMEDIATE (ignored elsewhere).
        self._writer = engine.execution_options(**{_SQLITE_BEGIN: "BEGIN IMMEDIATE"})
        # An in-memory SQLite database is one shared connection: take turns on it.
        shared = isinstance(engine.sync_engine.pool, StaticPool)
        self._lock: asyncio.Lock | None = asyncio.Lock() if shared else None

    @classmethod
    async def open(cls, url: str) -> Self:
        """Connect to ``url`` and migrate the schema to the newest revision.

        Accepts ``sqlite+aiosqlite:///path`` (the file is made mode 0600, its
        directory 0700 if missing) and ``postgresql+asyncpg://...``; the plain
        ``sqlite://`` and ``postgresql://`` spellings are mapped to those drivers.
        """
        parsed = normalise_url(url)
        path = _sqlite_file(parsed) if parsed.get_backend_name() == "sqlite" else None
        if path is not None:
            if not path.parent.is_dir():
                private_dir(path.parent)
            private_file(path)  # SQLite gives its WAL and SHM files the database's mode
        store = cls(_create_engine(parsed))
        try:
            await migrate(store._writer)
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        """Close every pooled connection. The store is unusable afterwards."""
        await self._engine.dispose()

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._engine.dialect.name

    def _turn(self) -> AbstractAsyncContextManager[Any]:
        return self._lock if self._lock is not None else nullcontext()

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        async with self._turn(), self._engine.connect() as conn:
            yield conn

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        async with self._turn(), self._writer.begin() as conn:
            yield conn

    def _insert_ignore(
        self, table: Table, keys: Sequence[str], values: Mapping[str, Any]
    ) -> Insert:
        """``INSERT ... ON CONFLICT (keys) DO NOTHING``."""
        if self.dialect == "postgresql":
            return pg_insert(table).values(values).on_conflict_do_nothing(index_elements=keys)
        return sqlite_insert(table).values(values).on_conflict_do_nothing(index_elements=keys)

    async def ping(self) -> bool:
        """Whether the database answers a trivial query now."""
        try:
            async with self._read() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:
            return False
        return True
