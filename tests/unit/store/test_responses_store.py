"""The store's stored responses, against SQLite and (when reachable) PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic import command
from sqlalchemy import inspect
from sqlalchemy.engine import Connection, make_url

from portway.store import Store
from portway.store.engine import _alembic_config
from portway.store.records import StoredResponse
from tests.services import require_service
from tests.unit import databases
from tests.unit.store import test_store as base

T0 = datetime(2025, 11, 26, 12, 0, tzinfo=UTC)


async def _postgres_reason() -> str:
    """Why the PostgreSQL server cannot be used ('' when it can)."""
    url = make_url(databases.POSTGRES_URL)
    try:
        conn = await asyncpg.connect(databases.asyncpg_dsn(url), timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return f"cannot connect: {exc!r}"
    await conn.close()
    return ""


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        opened = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'portway.db'}")
        try:
            yield opened
        finally:
            await opened.close()
        return
    reason = await _postgres_reason()
    require_service("postgresql", not reason, reason)
    async with databases.scratch_database(make_url(databases.POSTGRES_URL)) as url:
        opened = await Store.open(url)
        try:
            yield opened
        finally:
            await opened.close()


def _items(count: int) -> tuple[dict[str, Any], ...]:
    return tuple(
        {"type": "message", "id": f"msg_{n}", "role": "user", "status": "completed", "content": []}
        for n in range(count)
    )


def stored(response_id: str, user_id: int, previous: str | None = None) -> StoredResponse:
    return StoredResponse(
        id=response_id,
        user_id=user_id,
        previous_response_id=previous,
        model="acme/chat/models/bot",
        status="completed",
        created_at=T0,
        input_items=_items(2),
        output_items=({"type": "function_call", "id": "fc_1", "call_id": "call_1"},),
        body={"id": response_id, "object": "response", "nested": {"list": [1, 2]}},
    )


async def test_migration_creates_the_table_as_declared(store: Store) -> None:
    schema = await base._inspect_schema(store)
    assert "responses" in schema["tables"]
    assert schema["version"] >= "0002"
    assert schema["diff"] == []  # tables.py and the migrations agree


def _down_to_0001(conn: Connection) -> set[str]:
    command.downgrade(_alembic_config(conn), "0001")
    left = set(inspect(conn).get_table_names())
    command.upgrade(_alembic_config(conn), "head")
    return left


async def test_migration_downgrades(store: Store) -> None:
    async with store._writer.begin() as conn:
        left = await conn.run_sync(_down_to_0001)
    assert "responses" not in left
    assert "users" in left


async def test_save_get_delete_only_by_the_owner(store: Store) -> None:
    alice, bob = await store.ensure_user("alice"), await store.ensure_user("bob")
    saved = stored("resp_a", alice.id)
    await store.save_response(saved)
    assert await store.get_response("resp_a", alice.id) == saved
    assert await store.get_response("resp_a", bob.id) is None
    assert await store.get_response("resp_zzz", alice.id) is None
    assert not await store.delete_response("resp_a", bob.id)
    assert await store.delete_response("resp_a", alice.id)
    assert not await store.delete_response("resp_a", alice.id)
    assert await store.get_response("resp_a", alice.id) is None


async def test_save_replaces_and_refuses_bad_records(store: Store) -> None:
    alice, bob = await store.ensure_user("alice"), await store.ensure_user("bob")
    await store.save_response(stored("resp_a", alice.id))
    failed = replace(stored("resp_a", alice.id), status="failed", output_items=())
    await store.save_response(failed)
    assert await store.get_response("resp_a", alice.id) == failed
    with pytest.raises(ValueError, match="status"):
        await store.save_response(replace(failed, status="exploded"))
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.save_response(replace(failed, created_at=T0.replace(tzinfo=None)))
    with pytest.raises(ValueError, match="cannot be stored"):
        await store.save_response(stored("resp_a", bob.id))  # another user's id
    with pytest.raises(ValueError, match="cannot be stored"):
        await store.save_response(stored("resp_b", 9999))  # no such user
    assert await store.get_response("resp_a", alice.id) == failed


async def test_chain_newest_first_bounded_and_owned(store: Store) -> None:
    alice, bob = await store.ensure_user("alice"), await store.ensure_user("bob")
    await store.save_response(stored("resp_1", alice.id))
    await store.save_response(stored("resp_2", alice.id, "resp_1"))
    await store.save_response(stored("resp_3", alice.id, "resp_2"))
    chain = await store.response_chain("resp_3", alice.id, 10)
    assert [r.id for r in chain] == ["resp_3", "resp_2", "resp_1"]
    assert [r.id for r in await store.response_chain("resp_3", alice.id, 2)] == [
        "resp_3",
        "resp_2",
    ]
    assert await store.response_chain("resp_3", bob.id, 10) == []
    # A link owned by someone else ends the walk; the last response names it.
    await store.save_response(stored("resp_b", bob.id, "resp_3"))
    assert [r.id for r in await store.response_chain("resp_b", bob.id, 10)] == ["resp_b"]


async def test_chain_with_a_cycle_is_bounded(store: Store) -> None:
    alice = await store.ensure_user("alice")
    await store.save_response(stored("resp_x", alice.id, "resp_y"))
    await store.save_response(stored("resp_y", alice.id, "resp_x"))
    chain = await store.response_chain("resp_x", alice.id, 5)
    assert [r.id for r in chain] == ["resp_x", "resp_y", "resp_x", "resp_y", "resp_x"]


async def test_input_items_pages(store: Store) -> None:
    alice, bob = await store.ensure_user("alice"), await store.ensure_user("bob")
    await store.save_response(replace(stored("resp_a", alice.id), input_items=_items(5)))

    async def ids(**query: Any) -> tuple[list[str], bool]:
        page = await store.list_input_items("resp_a", alice.id, **query)
        assert page is not None
        return [item["id"] for item in page.items], page.has_more

    assert await ids() == (["msg_4", "msg_3", "msg_2", "msg_1", "msg_0"], False)
    assert await ids(order="asc", limit=2) == (["msg_0", "msg_1"], True)
    assert await ids(order="asc", limit=2, after="msg_1") == (["msg_2", "msg_3"], True)
    assert await ids(order="asc", limit=2, after="msg_3") == (["msg_4"], False)
    assert await ids(after="msg_1") == (["msg_0"], False)
    assert await ids(after="msg_0") == ([], False)
    with pytest.raises(ValueError, match="no input item"):
        await store.list_input_items("resp_a", alice.id, after="msg_9")
    with pytest.raises(ValueError, match="order"):
        await store.list_input_items("resp_a", alice.id, order="sideways")
    assert await store.list_input_items("resp_a", bob.id) is None


async def test_deleting_the_user_deletes_their_responses(store: Store) -> None:
    alice = await store.ensure_user("alice")
    await store.save_response(stored("resp_a", alice.id))
    async with store._writer.begin() as conn:
        await conn.exec_driver_sql(f"DELETE FROM users WHERE id = {alice.id}")
    assert await store.response_chain("resp_a", alice.id, 5) == []
