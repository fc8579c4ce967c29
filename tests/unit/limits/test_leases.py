"""Concurrency slots in Redis are leases: held for ``LEASE_MS`` past their last
renewal. A live process renews its in-flight requests' slots (one call a tick
for all of them), so a stream longer than any lease keeps its slot; a process
that died stops renewing, and its slots free within the lease. On a fake clock."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest

from portway.auth.principal import Principal
from portway.limits.errors import RateLimited
from portway.limits.limiter import Limiter
from portway.limits.memory import MemoryEnforcer
from portway.limits.model import LEASE_MS, RENEW_SECONDS, Admission, Verdict
from portway.limits.shared import RedisEnforcer
from portway.store import Store
from tests.unit.limits.conftest import drop_prefix, redis_client
from tests.unit.limits.test_enforcers import START, ask, token
from tests.unit.limits.test_limiter import Clock, principal

MINUTES = 60_000


@pytest.fixture
async def redis_enforcer() -> AsyncIterator[RedisEnforcer]:
    client = await redis_client()
    prefix = f"portway-test-{secrets.token_hex(6)}:"
    try:
        yield RedisEnforcer(client, prefix)
    finally:
        await drop_prefix(client, prefix)
        await client.aclose()


def test_the_lease_is_short_and_renewed_well_within_it() -> None:
    assert LEASE_MS <= 2 * MINUTES
    assert RENEW_SECONDS * 1000 * 2 < LEASE_MS  # a renewal may be missed and the slot kept


async def test_a_slot_nobody_renews_lapses_after_the_lease(redis_enforcer: RedisEnforcer) -> None:
    held = ask(token(concurrent=1))
    assert (await redis_enforcer.admit(held)).verdict is Verdict.ADMITTED
    late = await redis_enforcer.admit(ask(token(concurrent=1), at=START + LEASE_MS - 1))
    assert late.verdict is Verdict.CONCURRENT
    freed = await redis_enforcer.admit(ask(token(concurrent=1), at=START + LEASE_MS))
    assert freed.verdict is Verdict.ADMITTED


async def test_a_renewed_slot_outlives_many_leases(redis_enforcer: RedisEnforcer) -> None:
    held = ask(token(concurrent=1))
    assert (await redis_enforcer.admit(held)).verdict is Verdict.ADMITTED
    at = START
    while at < START + 20 * MINUTES:  # longer than the old 15-minute lease
        at += RENEW_SECONDS * 1000
        await redis_enforcer.renew([held], at)
        refused = await redis_enforcer.admit(ask(token(concurrent=1), at=at))
        assert refused.verdict is Verdict.CONCURRENT
    await redis_enforcer.settle(held, 0, first=True)
    await redis_enforcer.renew([held], at)  # a renewal after the end brings nothing back
    assert (await redis_enforcer.admit(ask(token(concurrent=1), at=at))).verdict is Verdict.ADMITTED


@dataclass
class Ticker:
    """The limiter's ``sleep``: each nap lasts until :meth:`tick`, which moves
    ``clock`` on by the nap and returns once the renewal after it is done."""

    clock: Clock
    naps: list[float] = field(default_factory=list)
    asleep: asyncio.Event = field(default_factory=asyncio.Event)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    async def sleep(self, seconds: float) -> None:
        self.naps.append(seconds)
        self.asleep.set()
        await self._wake.wait()
        self._wake.clear()

    async def napping(self) -> None:
        async with asyncio.timeout(10):  # a deadlock guard, not a timing
            await self.asleep.wait()

    async def tick(self) -> None:
        await self.napping()
        self.asleep.clear()
        self.clock.now += self.naps[-1]
        self._wake.set()
        await self.napping()


class Counting(RedisEnforcer):
    """The Redis enforcer, counting its renewal calls and what each renewed."""

    renewals: list[list[str]]

    async def renew(self, admissions: Sequence[Admission], now_ms: int) -> None:
        self.renewals = [*getattr(self, "renewals", []), [a.request_id for a in admissions]]
        await super().renew(admissions, now_ms)


async def test_a_live_process_keeps_its_slots_and_a_dead_ones_lapse(
    store: Store, redis_enforcer: RedisEnforcer
) -> None:
    who: Principal = await principal(store)
    await store.set_limits({"concurrent": 2}, token_id=who.token_id)
    clock = Clock()
    live, dead = Ticker(clock), Ticker(clock)
    client, prefix = redis_enforcer._client, redis_enforcer._prefix
    counting = Counting(client, prefix)
    alive = Limiter(store, counting, clock=clock, cache_seconds=0.0, sleep=live.sleep)
    killed = Limiter(store, RedisEnforcer(client, prefix), clock=clock, sleep=dead.sleep)
    try:
        streams = [await alive.admit(who, f"stream{n}", 1) for n in range(2)]
        await live.napping()
        with pytest.raises(RateLimited):
            await killed.admit(who, "refused", 1)
        await alive.finish(streams[1])  # one ends; the other streams for 20 minutes
        orphan = await killed.admit(who, "orphan", 1)  # its process dies: never renewed
        assert orphan is not None
        for _ in range(int(20 * MINUTES / 1000 / RENEW_SECONDS)):
            await live.tick()
        assert live.naps == [RENEW_SECONDS] * len(live.naps)
        assert counting.renewals == [["stream0"]] * len(counting.renewals)  # one call a tick
        assert await alive.admit(who, "next", 1) is not None  # the orphan's slot lapsed
        with pytest.raises(RateLimited):  # the long stream's slot is still held
            await alive.admit(who, "over", 1)
    finally:
        await alive.close()
        await killed.close()


async def test_nothing_in_flight_nothing_renewed(
    store: Store, redis_enforcer: RedisEnforcer
) -> None:
    who = await principal(store)
    await store.set_limits({"concurrent": 1}, token_id=who.token_id)
    counting = Counting(redis_enforcer._client, redis_enforcer._prefix)
    limiter = Limiter(store, counting, clock=Clock(), cache_seconds=0.0)
    try:
        ticket = await limiter.admit(who, "quick", 1)
        assert ticket is not None
        await limiter.renew()
        await limiter.finish(ticket)
        await limiter.renew()
        assert counting.renewals == [["quick"]]
    finally:
        await limiter.close()


async def test_memory_slots_are_not_leased_out() -> None:
    enforcer = MemoryEnforcer()
    held = ask(token(concurrent=1))
    await enforcer.admit(held)
    await enforcer.renew([held], START + LEASE_MS)  # nothing to renew: it dies with them
    later = await enforcer.admit(ask(token(concurrent=1), at=START + 2 * LEASE_MS))
    assert later.verdict is Verdict.CONCURRENT
