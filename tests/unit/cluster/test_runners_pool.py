"""RunnerPool's choices when runners of other processes share it: a preferred
runner, requests restricted to this process's runners, and the load of a runner
as its owner announced it."""

from __future__ import annotations

import asyncio

import pytest

from portway.cluster.runners_remote import RemoteLink
from portway.cluster.runners_wire import RemoteRunner
from portway.registry.errors import RunnerUnavailable
from portway.runners.link import Call, RunnerLink
from portway.runners.pool import RunnerPool
from portway.runners.wire import ModelInfo

INFO = ModelInfo(reference="alice/demo/models/echo", version="0" * 32)


class NoRouter:
    def open_call(self, link: RemoteLink, kind: str, payload: dict[str, object]) -> Call:
        raise AssertionError("no call is opened here")

    def close_call(self, link: RemoteLink, call: Call, *, cancel: bool) -> None:
        raise AssertionError("no call is closed here")


def local(name: str, concurrency: int = 1) -> RunnerLink:
    return RunnerLink(name, INFO, concurrency, "alice")


def remote(name: str, concurrency: int = 1, in_flight: int = 0) -> RemoteLink:
    runner = RemoteRunner(
        id=name, name=name, owner="alice", model=INFO, concurrency=concurrency, in_flight=in_flight
    )
    return RemoteLink(runner, "other", "other", NoRouter())


async def test_the_fewest_in_flight_counts_what_the_owner_announced() -> None:
    pool = RunnerPool("echo")
    busy_elsewhere, idle = remote("busy", concurrency=4, in_flight=3), local("idle", 4)
    pool.add(busy_elsewhere)
    pool.add(idle)
    assert [await pool.acquire() for _ in range(3)] == [idle, idle, idle]
    assert busy_elsewhere.load == 3
    assert await pool.acquire() is busy_elsewhere  # a tie: the first attached
    busy_elsewhere.reported = busy_elsewhere.reported.model_copy(update={"in_flight": 4})
    assert await pool.acquire() is idle


async def test_a_preferred_runner_with_a_free_slot_is_taken() -> None:
    pool = RunnerPool("echo")
    one, two = local("one", 2), local("two", 2)
    pool.add(one)
    pool.add(two)
    assert await pool.acquire() is one
    assert await pool.acquire(prefer=one) is one
    assert await pool.acquire(prefer=one) is two  # one is full


async def test_a_restricted_request_gets_only_its_runners() -> None:
    pool = RunnerPool("echo")
    mine, theirs = local("mine"), remote("theirs")
    pool.add(theirs)
    pool.add(mine)
    assert await pool.acquire(among={mine}) is mine
    waiting = asyncio.ensure_future(pool.acquire(among={mine}))
    await asyncio.sleep(0)
    assert await pool.acquire() is theirs  # lets the restricted one wait behind
    assert not waiting.done()
    pool.release(mine)
    assert await waiting is mine


async def test_a_restricted_waiter_fails_when_its_runners_are_gone() -> None:
    pool = RunnerPool("echo")
    mine, theirs = local("mine"), remote("theirs")
    pool.add(mine)
    pool.add(theirs)
    await pool.acquire(among={mine})
    await pool.acquire()
    restricted = asyncio.ensure_future(pool.acquire(among={mine}))
    anyone = asyncio.ensure_future(pool.acquire())
    await asyncio.sleep(0)
    pool.remove(mine)
    with pytest.raises(RunnerUnavailable):
        await restricted
    assert not anyone.done()
    pool.release(theirs)
    assert await anyone is theirs
    with pytest.raises(RunnerUnavailable):
        await pool.acquire(among={mine})
