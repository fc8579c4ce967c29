"""What the console's APIs read from the store: tokens by id and name, users,
usage per UTC day (SQLite and PostgreSQL alike)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from portway.api.usage import summarise
from portway.store import DailyUsage, Store
from tests.unit.databases import token_hash, usage

LATE = datetime(2025, 1, 2, 23, 59, 59, tzinfo=UTC)
"""The last second of a UTC day: a time zone slip would move it to the next."""


async def test_usage_is_summed_per_utc_day_user_and_model(store: Store) -> None:
    alice = await store.ensure_user("alice")
    bob = await store.ensure_user("bob")
    await store.record_usage(
        [
            usage("a", user_id=alice.id, started_at=LATE, ended_at=LATE),
            usage("b", user_id=alice.id, started_at=LATE - timedelta(hours=23)),
            usage("c", user_id=alice.id, started_at=LATE + timedelta(seconds=2), model="other"),
            usage("d", user_id=bob.id, started_at=LATE),
            usage("old", user_id=alice.id, started_at=LATE - timedelta(days=40)),
        ]
    )
    since = datetime(2025, 1, 1, tzinfo=UTC)
    found = await store.usage_by_day(since, "alice")
    assert found == [
        DailyUsage("2025-01-02", "alice", "gemma", 2, 20, 10),
        DailyUsage("2025-01-03", "alice", "other", 1, 10, 5),
    ]
    everyone = await store.usage_by_day(since)
    assert {(row.day, row.user) for row in everyone} == {
        ("2025-01-02", "alice"),
        ("2025-01-03", "alice"),
        ("2025-01-02", "bob"),
    }
    assert summarise(everyone, ("model",)) == [
        {
            "model": "gemma",
            "requests": 3,
            "prompt_tokens": 30,
            "completion_tokens": 15,
            "total_tokens": 45,
        },
        {
            "model": "other",
            "requests": 1,
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "total_tokens": 15,
        },
    ]
    with pytest.raises(ValueError, match="since"):
        await store.usage_by_day(since.replace(tzinfo=None))


async def test_tokens_keep_their_name_and_are_found_by_id(store: Store) -> None:
    user = await store.ensure_user("carol")
    made = await store.create_token(
        user_id=user.id,
        token_hash=token_hash("x"),
        last4="abcd",
        scopes=["inference"],
        expires_at=None,
        name="laptop",
    )
    found = await store.get_token(made.id)
    assert found is not None and found.name == "laptop" and found.user.name == "carol"
    assert await store.get_token("tok_missing") is None
    await store.ensure_user("alice")
    assert [user.name for user in await store.list_users()] == ["alice", "carol"]
