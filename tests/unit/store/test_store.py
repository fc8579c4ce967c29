"""Tests for portway.store, against SQLite and (when reachable) PostgreSQL.

PostgreSQL tests run in a scratch database created per test on the server at
``$PORTWAY_TEST_POSTGRES_URL`` (default: the local ``test`` database, trust auth)
and dropped afterwards. Without the server they are skipped, or fail in CI.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import sys
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Connection

import portway
from portway.store import (
    ANONYMOUS_USER,
    Store,
    TokenInfo,
    UsageSummary,
    User,
)
from portway.store.engine import _alembic_config
from portway.store.records import RunnerModel
from portway.store.tables import metadata
from tests.services import require_service
from tests.unit.databases import (
    T0,
    token_hash,
    usage,
)

_SRC_DIR = str(Path(portway.__file__).resolve().parents[1])  # for subprocesses

TABLES = {
    "users",
    "api_tokens",
    "usage_records",
    "model_versions",
    "responses",
    "secrets",
    "runner_models",
    "usage_rejected",
    "limits",
}


def _head() -> str:
    """The newest migration, so these tests need no edit when one is added."""
    from alembic.script import ScriptDirectory

    from portway.store.engine import MIGRATIONS_DIR

    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    assert head is not None
    return head


# ---------------------------------------------------------------------- migrations


def _schema(conn: Connection) -> dict[str, Any]:
    inspector = inspect(conn)
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return {
        "tables": set(inspector.get_table_names()),
        "usage_indexes": {
            ix["name"]: ix["column_names"] for ix in inspector.get_indexes("usage_records")
        },
        "token_uniques": inspector.get_unique_constraints("api_tokens"),
        "version": conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one(),
        "diff": compare_metadata(context, metadata),
    }


async def _inspect_schema(store: Store) -> dict[str, Any]:
    async with store._engine.connect() as conn:
        return await conn.run_sync(_schema)


async def test_migrations_create_the_schema(store: Store) -> None:
    schema = await _inspect_schema(store)
    assert schema["tables"] == TABLES | {"alembic_version"}
    assert schema["version"] == _head()
    assert schema["usage_indexes"]["ix_usage_records_user_id_started_at"] == [
        "user_id",
        "started_at",
    ]
    assert [u["column_names"] for u in schema["token_uniques"]] == [["token_hash"]]
    # tables.py and the migrations describe the same schema.
    assert schema["diff"] == []


async def test_open_twice_is_idempotent(db_url: str) -> None:
    first = await Store.open(db_url)
    try:
        user = await first.ensure_user("alice")
    finally:
        await first.close()
    second = await Store.open(db_url)
    try:
        assert (await _inspect_schema(second))["version"] == _head()
        assert await second.get_user("alice") == user
    finally:
        await second.close()


async def test_concurrent_opens_do_not_fail(db_url: str) -> None:
    results = await asyncio.gather(*(Store.open(db_url) for _ in range(4)), return_exceptions=True)
    stores = [r for r in results if isinstance(r, Store)]
    try:
        assert [r for r in results if not isinstance(r, Store)] == []
        assert [await s.count_users() for s in stores] == [0, 0, 0, 0]
    finally:
        for opened in stores:
            await opened.close()


async def test_concurrent_server_processes_migrate_once(db_url: str) -> None:
    script = (
        "import asyncio, sys\n"
        "from portway.store import Store\n"
        "async def main() -> None:\n"
        "    store = await Store.open(sys.argv[1])\n"
        "    await store.close()\n"
        "asyncio.run(main())\n"
    )
    pythonpath = os.pathsep.join([_SRC_DIR, os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": pythonpath}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, db_url, env=env, stderr=asyncio.subprocess.PIPE
        )
        for _ in range(3)
    ]
    outcomes = [(await p.wait(), (await p.stderr.read()).decode()) for p in procs if p.stderr]
    assert outcomes == [(0, "")] * 3
    store = await Store.open(db_url)
    try:
        assert (await _inspect_schema(store))["version"] == _head()
    finally:
        await store.close()


def _downgrade_then_upgrade(conn: Connection) -> set[str]:
    command.downgrade(_alembic_config(conn), "base")
    left = set(inspect(conn).get_table_names())
    command.upgrade(_alembic_config(conn), "head")
    return left


async def test_migrations_downgrade_to_nothing(store: Store) -> None:
    async with store._writer.begin() as conn:
        left = await conn.run_sync(_downgrade_then_upgrade)
    assert left & TABLES == set()
    assert (await _inspect_schema(store))["tables"] >= TABLES


# ----------------------------------------------------------------------- sqlite


async def test_sqlite_file_settings(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "portway.db"
    store = await Store.open(f"sqlite:///{path}")  # plain driver name is accepted
    try:
        assert store.dialect == "sqlite"
        async with store._engine.connect() as conn:
            pragmas = {
                name: (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar_one()
                for name in ("journal_mode", "foreign_keys", "busy_timeout")
            }
        assert pragmas == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 10_000}
    finally:
        await store.close()
    with closing(sqlite3.connect(path)) as raw:  # WAL is a property of the file
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_sqlite_writes_begin_immediate(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(store._engine.sync_engine, "before_cursor_execute", seen)
    try:
        await store.revoke_token("tok_unknown")
        assert statements[0] == "BEGIN IMMEDIATE"
        statements.clear()
        await store.get_user("nobody")
        assert statements[0] == "BEGIN"
    finally:
        await store.close()


async def test_sqlite_in_memory() -> None:
    store = await Store.open("sqlite+aiosqlite://")
    try:
        users = await asyncio.gather(*(store.ensure_user(f"u{i}") for i in range(5)))
        assert len({u.id for u in users}) == 5
        assert await store.count_users() == 5
    finally:
        await store.close()


async def test_unsupported_url_is_rejected() -> None:
    with pytest.raises(ValueError, match="unsupported database URL"):
        await Store.open("mysql://localhost/db")


# -------------------------------------------------------------------------- users


async def test_users_get_or_create(store: Store) -> None:
    assert store.dialect in {"sqlite", "postgresql"}
    assert await store.get_user("alice") is None
    assert await store.count_users() == 0
    alice = await store.ensure_user("alice", is_admin=True)
    assert alice.name == "alice"
    assert alice.is_admin is True
    assert alice.created_at.tzinfo == UTC
    # get, not create: is_admin only applies on creation
    assert await store.ensure_user("alice") == alice
    assert await store.get_user("alice") == alice
    bob = await store.ensure_user("bob")
    assert bob.is_admin is False
    assert bob.id != alice.id
    assert await store.count_users() == 2


async def test_concurrent_ensure_user_creates_one(store: Store) -> None:
    results = await asyncio.gather(*(store.ensure_user("carol") for _ in range(6)))
    assert len(set(results)) == 1
    assert await store.count_users() == 1


# ------------------------------------------------------------------------- tokens


async def test_token_create_and_find(store: Store) -> None:
    alice = await store.ensure_user("alice")
    created = await store.create_token(
        user_id=alice.id,
        token_hash=token_hash("one"),
        last4="wxyz",
        scopes=["inference", "admin"],
        expires_at=None,
    )
    assert re.fullmatch(r"tok_[0-9a-f]{24}", created.id)
    assert created.user == alice
    assert created.scopes == ("inference", "admin")
    assert created.last4 == "wxyz"
    assert created.expires_at is None
    assert created.revoked_at is None
    assert created.created_at.tzinfo == UTC
    assert await store.find_token(token_hash("one")) == created
    assert await store.find_token(token_hash("other")) is None
    second = await store.create_token(
        user_id=alice.id, token_hash=token_hash("two"), last4="abcd", scopes=[], expires_at=None
    )
    assert second.id != created.id
    assert second.scopes == ()


async def test_token_create_rejects_bad_input(store: Store) -> None:
    alice = await store.ensure_user("alice")
    good = {"last4": "abcd", "scopes": ["inference"], "expires_at": None}
    await store.create_token(user_id=alice.id, token_hash=token_hash("dup"), **good)
    with pytest.raises(ValueError, match="already exists"):
        await store.create_token(user_id=alice.id, token_hash=token_hash("dup"), **good)
    with pytest.raises(ValueError, match="no user with id"):
        await store.create_token(user_id=alice.id + 100, token_hash=token_hash("x"), **good)
    with pytest.raises(ValueError, match="32 bytes"):
        await store.create_token(user_id=alice.id, token_hash=b"short", **good)
    naive = {**good, "expires_at": datetime(2030, 1, 1)}
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.create_token(user_id=alice.id, token_hash=token_hash("y"), **naive)
    assert len(await store.list_tokens()) == 1  # and the store still works


async def test_list_tokens_ordered_and_filtered(store: Store) -> None:
    alice = await store.ensure_user("alice")
    bob = await store.ensure_user("bob")
    made: list[TokenInfo] = []
    for i, owner in enumerate([alice, bob, alice]):
        made.append(
            await store.create_token(
                user_id=owner.id,
                token_hash=token_hash(f"t{i}"),
                last4=f"000{i}",
                scopes=["inference"],
                expires_at=None,
            )
        )
    assert await store.list_tokens() == made
    assert await store.list_tokens("alice") == [made[0], made[2]]
    assert await store.list_tokens("bob") == [made[1]]
    assert await store.list_tokens("nobody") == []


async def test_revoke_token(store: Store) -> None:
    alice = await store.ensure_user("alice")
    token = await store.create_token(
        user_id=alice.id, token_hash=token_hash("r"), last4="rrrr", scopes=[], expires_at=None
    )
    assert await store.revoke_token(token.id) is True
    assert await store.revoke_token(token.id) is False
    assert await store.revoke_token("tok_000000000000000000000000") is False
    found = await store.find_token(token_hash("r"))
    assert found is not None
    assert found.revoked_at is not None
    assert found.revoked_at.tzinfo == UTC
    assert found.revoked_at >= token.created_at
    assert found == replace(token, revoked_at=found.revoked_at)


async def test_expiry_round_trips_as_utc(store: Store) -> None:
    alice = await store.ensure_user("alice")
    plus_two = timezone(timedelta(hours=2))
    expires = datetime(2031, 6, 1, 12, 30, 15, 123456, tzinfo=plus_two)
    token = await store.create_token(
        user_id=alice.id, token_hash=token_hash("e"), last4="eeee", scopes=[], expires_at=expires
    )
    found = await store.find_token(token_hash("e"))
    assert found == token
    assert found.expires_at == expires
    assert found.expires_at is not None
    assert found.expires_at.tzinfo == UTC
    assert found.expires_at.hour == 10


# -------------------------------------------------------------------------- usage


async def test_record_and_list_usage(store: Store) -> None:
    alice = await store.ensure_user("alice")
    token = await store.create_token(
        user_id=alice.id, token_hash=token_hash("u"), last4="uuuu", scopes=[], expires_at=None
    )
    late = usage(
        "req-late",
        user_id=alice.id,
        token_id=token.id,
        started_at=T0 + timedelta(seconds=5),
        ended_at=T0 + timedelta(seconds=6),
    )
    anonymous = usage(
        "req-anon",
        status="failed",
        error_code="context_length_exceeded",
        end_user="someone",
        version_id=None,
        completion_tokens=0,
    )
    early = usage(
        "req-early",
        user_id=alice.id,
        token_id=token.id,
        status="cancelled",
        started_at=T0 - timedelta(seconds=5),
    )
    await store.record_usage([late, anonymous, early])
    await store.record_usage([])
    assert await store.list_usage() == [early, anonymous, late]
    assert await store.list_usage("alice") == [early, late]
    assert await store.list_usage("nobody") == []
    listed = await store.list_usage()
    assert {r.started_at.tzinfo for r in listed} == {UTC}


async def test_record_usage_is_all_or_nothing(store: Store) -> None:
    with pytest.raises(ValueError, match="status 'weird'"):
        await store.record_usage([usage("ok"), usage("bad", status="weird")])
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.record_usage([usage("naive", started_at=datetime(2025, 1, 1))])
    with pytest.raises(ValueError, match="unknown user or token"):
        await store.record_usage([usage("ok"), usage("ghost", user_id=12345)])
    assert await store.list_usage() == []


async def test_usage_summary(store: Store) -> None:
    alice = await store.ensure_user("alice")
    bob = await store.ensure_user("bob")
    await store.record_usage(
        [
            usage("a1", user_id=alice.id, model="m1", prompt_tokens=1, completion_tokens=2),
            usage("a2", user_id=alice.id, model="m1", prompt_tokens=3, completion_tokens=4),
            usage("a3", user_id=alice.id, model="m2", prompt_tokens=5, completion_tokens=6),
            usage("b1", user_id=bob.id, model="m1", prompt_tokens=7, completion_tokens=8),
            usage("n1", model="m1", prompt_tokens=9, completion_tokens=10),
        ]
    )
    assert await store.usage_summary() == [
        UsageSummary(ANONYMOUS_USER, "m1", 1, 9, 10),
        UsageSummary("alice", "m1", 2, 4, 6),
        UsageSummary("alice", "m2", 1, 5, 6),
        UsageSummary("bob", "m1", 1, 7, 8),
    ]
    assert await store.usage_summary("alice") == [
        UsageSummary("alice", "m1", 2, 4, 6),
        UsageSummary("alice", "m2", 1, 5, 6),
    ]
    assert await store.usage_summary("nobody") == []


# ----------------------------------------------------------------- model versions


async def test_runner_models_are_remembered_with_their_latest_visibility(store: Store) -> None:
    assert await store.runner_models() == []
    await store.remember_runner_model("alice/demo/models/echo", "chat", "public")
    await store.remember_runner_model("alice/demo/models/echo", "chat", "private")
    await store.remember_runner_model("alice/demo/models/art", "image", "public")
    assert await store.runner_models() == [
        RunnerModel("alice/demo/models/art", "image", "public"),
        RunnerModel("alice/demo/models/echo", "chat", "private"),
    ]


async def test_register_model_version_is_idempotent(db_url: str) -> None:
    store = await Store.open(db_url)
    try:
        first = await store.register_model_version("gemma", "sha256:abc")
        assert first.tzinfo == UTC
        assert await store.register_model_version("gemma", "sha256:abc") == first
        other = await store.register_model_version("gemma", "sha256:def")
        assert other >= first
        racing = await asyncio.gather(
            *(store.register_model_version("llama", "v1") for _ in range(5))
        )
        assert len(set(racing)) == 1
    finally:
        await store.close()
    reopened = await Store.open(db_url)
    try:
        assert await reopened.register_model_version("gemma", "sha256:abc") == first
    finally:
        await reopened.close()


# --------------------------------------------------------------- records & helpers


def test_records_are_frozen() -> None:
    user = User(id=1, name="a", is_admin=False, created_at=T0)
    with pytest.raises(AttributeError):
        user.name = "b"  # type: ignore[misc]


@pytest.fixture
def ci_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("CI", raising=False)
    return monkeypatch


def test_require_service_passes_when_reachable(ci_env: pytest.MonkeyPatch) -> None:
    ci_env.setenv("CI", "true")
    require_service("postgresql", True, "unused")


def test_require_service_skips_outside_ci(ci_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(pytest.skip.Exception, match="postgresql is not available: down"):
        require_service("postgresql", False, "down")


def test_require_service_fails_in_ci(ci_env: pytest.MonkeyPatch) -> None:
    ci_env.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="postgresql is not available: down"):
        require_service("postgresql", False, "down")
