"""Portway's storage layer: the only code in the project that talks SQL.

:class:`Store` wraps a SQLAlchemy async engine. SQLite (``sqlite+aiosqlite``, the
default, single node) runs in WAL mode with foreign keys on and a busy timeout;
PostgreSQL (``postgresql+asyncpg``) is the multi-node choice. :meth:`Store.open`
applies the Alembic migrations shipped in :mod:`portway.store.migrations`,
serialised across processes (an advisory lock on PostgreSQL, ``BEGIN IMMEDIATE``
on SQLite), so several servers can start at once.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    Select,
    Table,
    delete,
    event,
    func,
    insert,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, Connection, RowMapping, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.dml import Insert

from portway.private import private_dir, private_file
from portway.store.records import (
    ANONYMOUS_USER,
    RESPONSE_STATUSES,
    USAGE_STATUSES,
    DailyUsage,
    ItemPage,
    RejectedUsage,
    RunnerModel,
    SecretInfo,
    StoredResponse,
    TokenInfo,
    UsageRecord,
    UsageSummary,
    User,
    printable,
)
from portway.store.tables import (
    api_tokens,
    model_versions,
    responses,
    runner_models,
    stored_secrets,
    usage_records,
    usage_rejected,
    users,
)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Key for pg_advisory_xact_lock around migrations: "portway" in ASCII.
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

TOKEN_HASH_BYTES = 32


def _now() -> datetime:
    return datetime.now(UTC)


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
        if conn.dialect.name == "postgresql":
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK}
            )
        await conn.run_sync(_upgrade_to_head)


# ------------------------------------------------------------------------- mapping


def _user(row: RowMapping) -> User:
    return User(
        id=row[users.c.id],
        name=row[users.c.name],
        is_admin=bool(row[users.c.is_admin]),
        created_at=row[users.c.created_at],
    )


def _token(row: RowMapping) -> TokenInfo:
    return TokenInfo(
        id=row[api_tokens.c.id],
        user=_user(row),
        scopes=tuple(row[api_tokens.c.scopes]),
        created_at=row[api_tokens.c.created_at],
        expires_at=row[api_tokens.c.expires_at],
        revoked_at=row[api_tokens.c.revoked_at],
        last4=row[api_tokens.c.last4],
        token_hash=bytes(row[api_tokens.c.token_hash]),
        name=row[api_tokens.c.name],
    )


_USAGE_FIELDS = tuple(UsageRecord.__dataclass_fields__)


def _usage(row: RowMapping) -> UsageRecord:
    return UsageRecord(**{name: row[usage_records.c[name]] for name in _USAGE_FIELDS})


def _require_aware(value: datetime | None, what: str) -> None:
    """Reject naive datetimes up front (instead of as a SQLAlchemy StatementError)."""
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got {value!r}")


def _usage_row(record: UsageRecord) -> dict[str, Any]:
    if record.status not in USAGE_STATUSES:
        raise ValueError(
            f"usage record {record.request_id!r} has status {record.status!r}, "
            f"expected one of {USAGE_STATUSES}"
        )
    _require_aware(record.started_at, f"started_at of usage record {record.request_id!r}")
    _require_aware(record.ended_at, f"ended_at of usage record {record.request_id!r}")
    return {name: getattr(record, name) for name in _USAGE_FIELDS}


def _usage_json(record: UsageRecord) -> dict[str, Any]:
    """``record`` as JSON-ready values (datetimes as ISO 8601 text)."""
    return {
        name: value.isoformat() if isinstance(value, datetime) else value
        for name, value in asdict(record).items()
    }


_RESPONSE_FIELDS = tuple(StoredResponse.__dataclass_fields__)


def _stored_response(row: RowMapping) -> StoredResponse:
    values = {name: row[responses.c[name]] for name in _RESPONSE_FIELDS}
    values["input_items"] = tuple(values["input_items"])
    values["output_items"] = tuple(values["output_items"])
    return StoredResponse(**values)


def _response_row(response: StoredResponse) -> dict[str, Any]:
    if response.status not in RESPONSE_STATUSES:
        raise ValueError(
            f"response {response.id!r} has status {response.status!r}, "
            f"expected one of {RESPONSE_STATUSES}"
        )
    _require_aware(response.created_at, f"created_at of response {response.id!r}")
    row = asdict(response)
    row["input_items"] = list(response.input_items)
    row["output_items"] = list(response.output_items)
    return row


def _chain_select(response_id: str, user_id: int, limit: int) -> Select[Any]:
    """The response ``response_id`` of ``user_id`` and up to ``limit - 1`` of its
    predecessors, newest first. Bounded by depth, so a cycle cannot loop."""
    start = select(
        responses.c.id, responses.c.previous_response_id, literal_column("1").label("depth")
    ).where(responses.c.id == response_id, responses.c.user_id == user_id)
    chain = start.cte("chain", recursive=True)
    link = responses.alias("link")
    step = (
        select(link.c.id, link.c.previous_response_id, chain.c.depth + 1)
        .select_from(link.join(chain, link.c.id == chain.c.previous_response_id))
        .where(link.c.user_id == user_id, chain.c.depth < limit)
    )
    chain = chain.union_all(step)
    return (
        select(responses)
        .join(chain, responses.c.id == chain.c.id)
        .order_by(chain.c.depth)
        .limit(limit)
    )


def _page(items: Sequence[dict[str, Any]], after: str | None, limit: int, order: str) -> ItemPage:
    ordered = list(items) if order == "asc" else list(reversed(items))
    if after is not None:
        ids = [item.get("id") for item in ordered]
        if after not in ids:
            raise ValueError(f"no input item {after!r} in this response")
        ordered = ordered[ids.index(after) + 1 :]
    return ItemPage(items=tuple(ordered[:limit]), has_more=len(ordered) > limit)


def _token_select() -> Select[Any]:
    return select(api_tokens, users).join_from(api_tokens, users)


def _usage_select(user_name: str | None) -> Select[Any]:
    stmt = select(usage_records)
    if user_name is not None:
        stmt = stmt.join_from(usage_records, users).where(users.c.name == user_name)
    return stmt.order_by(usage_records.c.started_at, usage_records.c.id)


# --------------------------------------------------------------------------- store


class Store:
    """Async access to Portway's database. Create with :meth:`open`."""

    def __init__(self, engine: AsyncEngine) -> None:
        """Wrap ``engine``; prefer :meth:`open`, which also migrates."""
        self._engine = engine
        # On SQLite, write transactions start with BEGIN IMMEDIATE (ignored elsewhere).
        self._writer = engine.execution_options(**{_SQLITE_BEGIN: "BEGIN IMMEDIATE"})
        # An in-memory SQLite database is one shared connection: take turns on it.
        shared = isinstance(engine.sync_engine.pool, StaticPool)
        self._lock: asyncio.Lock | None = asyncio.Lock() if shared else None

    @classmethod
    async def open(cls, url: str) -> Store:
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

    # -- plumbing

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

    # -- users

    async def ensure_user(self, name: str, *, is_admin: bool = False) -> User:
        """Return the user called ``name``, creating it if missing.

        ``is_admin`` only applies on creation: an existing user is returned as is.
        Safe against concurrent callers creating the same user.
        """
        user = await self.get_user(name)
        if user is not None:
            return user
        values = {"name": name, "is_admin": is_admin, "created_at": _now()}
        async with self._write() as conn:
            await conn.execute(self._insert_ignore(users, ["name"], values))
            row = (await conn.execute(select(users).where(users.c.name == name))).one()
        return _user(row._mapping)

    async def get_user(self, name: str) -> User | None:
        """The user called ``name``, or None."""
        async with self._read() as conn:
            result = await conn.execute(select(users).where(users.c.name == name))
            row = result.one_or_none()
        return None if row is None else _user(row._mapping)

    async def count_users(self) -> int:
        """How many users exist."""
        async with self._read() as conn:
            count: int = (await conn.execute(select(func.count()).select_from(users))).scalar_one()
        return count

    # -- tokens

    async def create_token(
        self,
        *,
        user_id: int,
        token_hash: bytes,
        last4: str,
        scopes: Sequence[str],
        expires_at: datetime | None,
        name: str = "",
    ) -> TokenInfo:
        """Store a new token for user ``user_id`` and return its metadata.

        The id is ``"tok_"`` plus 24 random lowercase hex characters.
        ``token_hash`` is the 32-byte SHA-256 digest of the secret.
        Raises ``ValueError`` if the user does not exist, the hash is malformed
        or already stored, or ``expires_at`` is naive.
        """
        if len(token_hash) != TOKEN_HASH_BYTES:
            raise ValueError(f"token_hash must be {TOKEN_HASH_BYTES} bytes, got {len(token_hash)}")
        if isinstance(scopes, str):
            raise TypeError("scopes must be a sequence of scope names, not a string")
        _require_aware(expires_at, "expires_at")
        values: dict[str, Any] = {
            "id": "tok_" + secrets.token_hex(12),
            "user_id": user_id,
            "token_hash": bytes(token_hash),
            "last4": last4,
            "scopes": list(scopes),
            "created_at": _now(),
            "expires_at": expires_at,
            "revoked_at": None,
            "name": name,
        }
        async with self._write() as conn:
            found = await conn.execute(select(users).where(users.c.id == user_id))
            owner = found.one_or_none()
            if owner is None:
                raise ValueError(f"no user with id {user_id}")
            try:
                await conn.execute(insert(api_tokens).values(values))
            except IntegrityError as exc:
                raise ValueError("a token with this hash already exists") from exc
        return TokenInfo(
            id=values["id"],
            user=_user(owner._mapping),
            scopes=tuple(scopes),
            created_at=values["created_at"],
            expires_at=None if expires_at is None else expires_at.astimezone(UTC),
            revoked_at=None,
            last4=last4,
            token_hash=token_hash,
            name=name,
        )

    async def find_token(self, token_hash: bytes) -> TokenInfo | None:
        """The token whose hash is ``token_hash``, revoked or expired ones
        included (the caller decides), or None."""
        stmt = _token_select().where(api_tokens.c.token_hash == bytes(token_hash))
        async with self._read() as conn:
            row = (await conn.execute(stmt)).one_or_none()
        return None if row is None else _token(row._mapping)

    async def list_tokens(self, user_name: str | None = None) -> list[TokenInfo]:
        """All tokens, or those of ``user_name``, oldest first."""
        stmt = _token_select().order_by(api_tokens.c.created_at, api_tokens.c.id)
        if user_name is not None:
            stmt = stmt.where(users.c.name == user_name)
        async with self._read() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_token(row._mapping) for row in rows]

    async def get_token(self, token_id: str) -> TokenInfo | None:
        """The token with id ``token_id`` (revoked or expired included), or None."""
        stmt = _token_select().where(api_tokens.c.id == token_id)
        async with self._read() as conn:
            row = (await conn.execute(stmt)).one_or_none()
        return None if row is None else _token(row._mapping)

    async def list_users(self) -> list[User]:
        """Every user, by name."""
        async with self._read() as conn:
            rows = (await conn.execute(select(users).order_by(users.c.name))).all()
        return [_user(row._mapping) for row in rows]

    async def revoke_token(self, token_id: str) -> bool:
        """Mark the token revoked now. False if unknown or already revoked."""
        stmt = (
            update(api_tokens)
            .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
            .values(revoked_at=_now())
        )
        async with self._write() as conn:
            result = await conn.execute(stmt)
        return result.rowcount == 1

    # -- usage

    async def record_usage(self, records: Sequence[UsageRecord]) -> None:
        """Insert ``records`` in one transaction (all or nothing); a record whose
        ``entry_id`` is already stored is skipped (a replay stores nothing twice).

        ``user_id`` and ``token_id`` may be None. Raises ``ValueError`` (and
        writes nothing) if a status is not one of
        :data:`~portway.store.records.USAGE_STATUSES`, a datetime is naive, or a
        record names a user or token that does not exist.
        """
        rows = [_usage_row(record) for record in records]
        if not rows:
            return
        maker = pg_insert if self.dialect == "postgresql" else sqlite_insert
        stmt = maker(usage_records).on_conflict_do_nothing(index_elements=["entry_id"])
        try:
            async with self._write() as conn:
                await conn.execute(stmt, rows)
        except IntegrityError as exc:
            raise ValueError("usage records name an unknown user or token") from exc

    async def set_aside_usage(self, record: UsageRecord, reason: str) -> None:
        """Keep ``record``, which the database refused, where an admin can see it
        (:meth:`rejected_usage`): as JSON text (non-ASCII escaped), with ``reason``."""
        values = {
            "request_id": printable(record.request_id)[:200],
            "record": json.dumps(_usage_json(record), ensure_ascii=True),
            "reason": printable(reason)[:2000],
            "rejected_at": _now(),
        }
        async with self._write() as conn:
            await conn.execute(insert(usage_rejected).values(values))

    async def rejected_usage(self) -> list[RejectedUsage]:
        """Every usage record set aside, oldest first."""
        stmt = select(usage_rejected).order_by(usage_rejected.c.id)
        async with self._read() as conn:
            rows = (await conn.execute(stmt)).all()
        return [
            RejectedUsage(
                id=row.id,
                request_id=row.request_id,
                record=json.loads(row.record),
                reason=row.reason,
                rejected_at=row.rejected_at,
            )
            for row in rows
        ]

    async def ping(self) -> bool:
        """Whether the database answers a trivial query now."""
        try:
            async with self._read() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    async def usage_summary(self, user_name: str | None = None) -> list[UsageSummary]:
        """Totals per (user name, model), sorted by user then model.

        Usage recorded without a user is reported as
        :data:`~portway.store.records.ANONYMOUS_USER` (and only when
        ``user_name`` is None).
        """
        stmt = (
            select(
                users.c.name,
                usage_records.c.model,
                func.count(),
                func.sum(usage_records.c.prompt_tokens),
                func.sum(usage_records.c.completion_tokens),
            )
            .select_from(usage_records.outerjoin(users, usage_records.c.user_id == users.c.id))
            .group_by(users.c.name, usage_records.c.model)
        )
        if user_name is not None:
            stmt = stmt.where(users.c.name == user_name)
        async with self._read() as conn:
            rows = (await conn.execute(stmt)).all()
        summaries = [
            UsageSummary(
                user=ANONYMOUS_USER if name is None else name,
                model=model,
                requests=int(requests),
                prompt_tokens=int(prompt or 0),
                completion_tokens=int(completion or 0),
            )
            for name, model, requests, prompt, completion in rows
        ]
        return sorted(summaries, key=lambda s: (s.user, s.model))

    async def usage_by_day(self, since: datetime, user_name: str | None = None) -> list[DailyUsage]:
        """Totals per (UTC day, user, model) of requests started at or after
        ``since``, for everyone or for ``user_name``, by day, user, model."""
        _require_aware(since, "since")
        day = self._day(usage_records.c.started_at).label("day")
        stmt = (
            select(
                day,
                users.c.name,
                usage_records.c.model,
                func.count(),
                func.sum(usage_records.c.prompt_tokens),
                func.sum(usage_records.c.completion_tokens),
            )
            .select_from(usage_records.outerjoin(users, usage_records.c.user_id == users.c.id))
            .where(usage_records.c.started_at >= since)
            .group_by(day, users.c.name, usage_records.c.model)
        )
        if user_name is not None:
            stmt = stmt.where(users.c.name == user_name)
        async with self._read() as conn:
            rows = (await conn.execute(stmt)).all()
        found = [
            DailyUsage(
                str(when), name or ANONYMOUS_USER, model, int(count), int(p or 0), int(c or 0)
            )
            for when, name, model, count, p, c in rows
        ]
        return sorted(found, key=lambda row: (row.day, row.user, row.model))

    def _day(self, column: Any) -> Any:
        """``YYYY-MM-DD`` (UTC) of a stored datetime: SQLite keeps naive UTC text."""
        if self.dialect == "postgresql":
            return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
        return func.substr(column, 1, 10)

    async def list_usage(self, user_name: str | None = None) -> list[UsageRecord]:
        """All usage records, or those of ``user_name``, by ``started_at``."""
        async with self._read() as conn:
            rows = (await conn.execute(_usage_select(user_name))).all()
        return [_usage(row._mapping) for row in rows]

    # -- model versions

    async def register_model_version(self, model: str, version_id: str) -> datetime:
        """Record that ``version_id`` of ``model`` exists (idempotent).

        Returns when the pair was first recorded; later calls, from any
        process, return the same instant.
        """
        stmt = select(model_versions.c.created_at).where(
            model_versions.c.model == model, model_versions.c.version_id == version_id
        )
        async with self._read() as conn:
            known: datetime | None = (await conn.execute(stmt)).scalar_one_or_none()
        if known is not None:
            return known
        values = {"model": model, "version_id": version_id, "created_at": _now()}
        async with self._write() as conn:
            await conn.execute(self._insert_ignore(model_versions, ["model", "version_id"], values))
            created: datetime = (await conn.execute(stmt)).scalar_one()
        return created

    async def remember_runner_model(self, model: str, kind: str, visibility: str) -> None:
        """Record that runners serve ``model`` (its latest kind and visibility)."""
        now = _now()
        values = {"model": model, "kind": kind, "visibility": visibility, "updated_at": now}
        maker = pg_insert if self.dialect == "postgresql" else sqlite_insert
        stmt = maker(runner_models).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["model"],
            set_={"kind": kind, "visibility": visibility, "updated_at": now},
        )
        async with self._write() as conn:
            await conn.execute(stmt)

    async def runner_models(self) -> list[RunnerModel]:
        """Every model runners have served, by reference."""
        table = runner_models
        stmt = select(table.c.model, table.c.kind, table.c.visibility).order_by(table.c.model)
        async with self._read() as conn:
            rows = (await conn.execute(stmt)).all()
        return [RunnerModel(model, kind, visibility) for model, kind, visibility in rows]

    # -- responses

    async def save_response(self, response: StoredResponse) -> None:
        """Store ``response``, replacing an earlier save of the same id by the same user.

        Raises ``ValueError`` (and writes nothing) for a status not in
        :data:`~portway.store.records.RESPONSE_STATUSES`, a naive ``created_at``,
        an unknown user, or an id another user's response already has.
        """
        row = _response_row(response)
        mine = (responses.c.id == response.id) & (responses.c.user_id == response.user_id)
        try:
            async with self._write() as conn:
                await conn.execute(delete(responses).where(mine))
                await conn.execute(insert(responses).values(row))
        except IntegrityError as exc:
            raise ValueError(f"response {response.id!r} cannot be stored: {exc.orig}") from exc

    async def get_response(self, response_id: str, user_id: int) -> StoredResponse | None:
        """The response ``response_id`` if user ``user_id`` owns it, else None."""
        stmt = select(responses).where(
            responses.c.id == response_id, responses.c.user_id == user_id
        )
        async with self._read() as conn:
            row = (await conn.execute(stmt)).one_or_none()
        return None if row is None else _stored_response(row._mapping)

    async def delete_response(self, response_id: str, user_id: int) -> bool:
        """Delete the response if user ``user_id`` owns it. False if there was none."""
        stmt = delete(responses).where(
            responses.c.id == response_id, responses.c.user_id == user_id
        )
        async with self._write() as conn:
            result = await conn.execute(stmt)
        return result.rowcount == 1

    async def response_chain(
        self, response_id: str, user_id: int, limit: int
    ) -> list[StoredResponse]:
        """``response_id`` and its predecessors (``previous_response_id``), newest
        first: at most ``limit`` responses, all owned by ``user_id``.

        The walk stops at a response without predecessor, at one that is missing
        or not the user's (the last one returned then names it), or at ``limit``.
        """
        async with self._read() as conn:
            rows = (await conn.execute(_chain_select(response_id, user_id, limit))).all()
        return [_stored_response(row._mapping) for row in rows]

    async def list_input_items(
        self,
        response_id: str,
        user_id: int,
        *,
        after: str | None = None,
        limit: int = 20,
        order: str = "desc",
    ) -> ItemPage | None:
        """A page of the input items of the response, or None if the user has no
        such response. ``order`` is ``"asc"`` or ``"desc"``; ``after`` is the id
        of the item the page starts after (``ValueError`` if there is none).
        """
        if order not in ("asc", "desc"):
            raise ValueError(f"order must be 'asc' or 'desc', got {order!r}")
        stmt = select(responses.c.input_items).where(
            responses.c.id == response_id, responses.c.user_id == user_id
        )
        async with self._read() as conn:
            items = (await conn.execute(stmt)).scalar_one_or_none()
        return None if items is None else _page(items, after, limit, order)

    # -- secrets (values are ciphertext: portway.store.secrets encrypts them)

    async def put_secret(self, name: str, ciphertext: bytes) -> None:
        """Store ``ciphertext`` under ``name``, replacing an earlier value."""
        now = _now()
        values = {"name": name, "ciphertext": ciphertext, "created_at": now, "updated_at": now}
        maker = pg_insert if self.dialect == "postgresql" else sqlite_insert
        stmt = maker(stored_secrets).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["name"], set_={"ciphertext": ciphertext, "updated_at": now}
        )
        async with self._write() as conn:
            await conn.execute(stmt)

    async def get_secret(self, name: str) -> bytes | None:
        """The ciphertext stored under ``name``, or None."""
        stmt = select(stored_secrets.c.ciphertext).where(stored_secrets.c.name == name)
        async with self._read() as conn:
            found = (await conn.execute(stmt)).scalar_one_or_none()
        return None if found is None else bytes(found)

    async def list_secrets(self) -> list[SecretInfo]:
        """Every secret's name and dates, by name."""
        table = stored_secrets
        stmt = select(table.c.name, table.c.created_at, table.c.updated_at).order_by(table.c.name)
        async with self._read() as conn:
            rows = (await conn.execute(stmt)).all()
        return [SecretInfo(name, created, updated) for name, created, updated in rows]

    async def delete_secret(self, name: str) -> bool:
        """Delete the secret ``name``. False if there was none."""
        async with self._write() as conn:
            result = await conn.execute(delete(stored_secrets).where(stored_secrets.c.name == name))
        return result.rowcount == 1
