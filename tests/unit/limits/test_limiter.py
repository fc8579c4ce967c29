"""The limiter over a real store: limits read and cached, budgets started from
the ledger, refusals in OpenAI's shapes, late usage, and the headers' formats."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from portway.auth.principal import Principal
from portway.limits.errors import QuotaExceeded, RateLimited
from portway.limits.estimate import request_estimate
from portway.limits.headers import duration, retry_after
from portway.limits.limiter import Limiter
from portway.limits.memory import MemoryEnforcer
from portway.store import Store
from tests.unit.databases import token_hash, usage

NOW = datetime(2026, 5, 28, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = NOW.timestamp()

    def __call__(self) -> float:
        return self.now


async def principal(store: Store, name: str = "lena") -> Principal:
    user = await store.ensure_user(name)
    token = await store.create_token(
        user_id=user.id,
        token_hash=token_hash(name),
        last4="abcd",
        scopes=["inference"],
        expires_at=None,
    )
    return Principal(user=user, token_id=token.id, scopes=token.scopes)


def limiter(store: Store, clock: Clock, cache_seconds: float = 0.0) -> Limiter:
    return Limiter(store, MemoryEnforcer(), clock=clock, cache_seconds=cache_seconds)


async def test_no_limits_no_ticket(store: Store) -> None:
    who = await principal(store)
    assert await limiter(store, Clock()).admit(who, "r1", 10) is None


async def test_token_and_user_limits_both_apply(store: Store) -> None:
    who, clock = await principal(store), Clock()
    await store.set_limits({"rpm": 5}, token_id=who.token_id)
    await store.set_limits({"rpm": 1, "tpm": 100}, user_id=who.user.id)
    limits = limiter(store, clock)
    ticket = await limits.admit(who, "r1", 10)
    assert ticket is not None
    assert ticket.headers == {
        "x-ratelimit-limit-requests": "1",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1m0s",
        "x-ratelimit-limit-tokens": "100",
        "x-ratelimit-remaining-tokens": "90",
        "x-ratelimit-reset-tokens": "1m0s",
    }
    clock.now += 15
    with pytest.raises(RateLimited) as refused:
        await limits.admit(who, "r2", 10)
    error = refused.value
    assert (error.status, error.type, error.code) == (429, "requests", "rate_limit_exceeded")
    assert error.headers["retry-after"] == "45"
    assert error.headers["x-ratelimit-reset-requests"] == "45s"
    assert "Limit 1, Used 1, Requested 1" in error.message


async def test_limits_are_cached_then_read_again(store: Store) -> None:
    who, clock = await principal(store), Clock()
    limits = limiter(store, clock, cache_seconds=3600)
    assert await limits.admit(who, "r1", 1) is None
    await store.set_limits({"rpm": 0}, user_id=who.user.id)
    assert await limits.admit(who, "r2", 1) is None  # still the cached "unlimited"
    fresh = limiter(store, clock)
    with pytest.raises(RateLimited):
        await fresh.admit(who, "r3", 1)


async def test_a_budget_starts_from_the_ledger(store: Store) -> None:
    who, clock = await principal(store), Clock()
    earlier = usage("old", user_id=who.user.id, token_id=who.token_id, started_at=NOW, ended_at=NOW)
    await store.record_usage([earlier])  # 15 tokens today
    await store.set_limits({"tokens_per_day": 15}, token_id=who.token_id)
    with pytest.raises(QuotaExceeded) as refused:
        await limiter(store, clock).admit(who, "r1", 1)
    error = refused.value
    assert (error.status, error.type, error.code) == (
        429,
        "insufficient_quota",
        "insufficient_quota",
    )
    assert error.headers["retry-after"] == str(12 * 3600)


async def test_usage_counts_once_finished_and_late_too(store: Store) -> None:
    who, clock = await principal(store), Clock()
    await store.set_limits({"tokens_per_month": 100}, user_id=who.user.id)
    limits = limiter(store, clock)
    ticket = await limits.admit(who, "r1", 1)
    assert ticket is not None
    limits.record(ticket, 60)
    await limits.finish(ticket)
    await limits.finish(ticket)  # once only
    assert await limits.admit(who, "r2", 1) is not None
    limits.record(ticket, 40)  # a row written after the answer ended
    await limits.close()
    with pytest.raises(QuotaExceeded):
        await limits.admit(who, "r3", 1)


def test_durations_are_written_as_openai_writes_them() -> None:
    assert [duration(ms) for ms in (0, 120, 1000, 1500, 60_000, 360_000, 3_723_004)] == [
        "0s",
        "120ms",
        "1s",
        "1.5s",
        "1m0s",
        "6m0s",
        "1h2m3.004s",
    ]
    assert [retry_after(ms) for ms in (0, 1, 1000, 1001)] == ["1", "1", "1", "2"]


def test_the_estimate_is_the_prompt_and_the_most_it_may_write() -> None:
    class Chat:
        max_tokens = 10
        max_completion_tokens = None
        n = 3

    class Embedding:
        n = None

    assert request_estimate(400, Chat()) == 100 + 30
    assert request_estimate(400, Embedding()) == 100
