"""The limits around one request (limits.guard): a concurrency slot is held
while the answer is sent, a stream's included, and freed however it ends (the
last byte, a client that left, an error, a cancellation); the rate limit
headers go on the answer and on the error."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from starlette.responses import Response, StreamingResponse
from starlette.types import Message

from portway.auth.principal import Principal
from portway.errors import PortwayError
from portway.limits.errors import RateLimited
from portway.limits.guard import under_limits
from portway.limits.limiter import Limiter
from portway.limits.memory import MemoryEnforcer
from portway.serving.context import RequestContext
from portway.store import Store
from tests.unit.limits.test_limiter import principal

SCOPE = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}


class Body:
    max_tokens = 5


async def concurrent_one(store: Store) -> tuple[Limiter, Principal]:
    who = await principal(store)
    await store.set_limits({"concurrent": 1, "rpm": 100}, token_id=who.token_id)
    return Limiter(store, MemoryEnforcer(), cache_seconds=0.0), who


def ctx(who: Principal, request_id: str) -> RequestContext:
    return RequestContext(request_id=request_id, principal=who, endpoint="chat.completions")


async def admitted(limiter: Limiter, who: Principal, request_id: str) -> bool:
    async def work() -> Response:
        return Response(b"{}")

    try:
        await under_limits(limiter, ctx(who, request_id), 10, Body(), work)
    except RateLimited:
        return False
    return True


async def test_a_stream_holds_its_slot_until_its_last_byte(store: Store) -> None:
    limiter, who = await concurrent_one(store)
    release = asyncio.Event()

    async def chunks() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"
        await release.wait()
        yield b"data: [DONE]\n\n"

    async def work() -> Response:
        return StreamingResponse(chunks(), media_type="text/event-stream")

    response = await under_limits(limiter, ctx(who, "r1"), 10, Body(), work)
    sent: list[Message] = []
    first_chunk = asyncio.Event()

    async def send(message: Message) -> None:
        sent.append(message)
        if message.get("body"):
            first_chunk.set()

    async def receive() -> Message:
        await asyncio.Event().wait()  # the client stays
        raise AssertionError

    streaming = asyncio.create_task(response(SCOPE, receive, send))
    await first_chunk.wait()
    with pytest.raises(RateLimited) as refused:
        await under_limits(limiter, ctx(who, "r2"), 10, Body(), work)
    assert refused.value.type == "requests"
    release.set()
    await streaming
    headers = dict(sent[0]["headers"])
    assert headers[b"x-ratelimit-limit-requests"] == b"100"
    assert await admitted(limiter, who, "r3")


async def test_a_client_that_leaves_mid_stream_frees_the_slot(store: Store) -> None:
    limiter, who = await concurrent_one(store)

    async def chunks() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"
        await asyncio.Event().wait()  # never ends by itself
        yield b""

    async def work() -> Response:
        return StreamingResponse(chunks(), media_type="text/event-stream")

    response = await under_limits(limiter, ctx(who, "r1"), 10, Body(), work)

    async def send(message: Message) -> None:
        if message.get("body"):
            raise OSError("the client went away")

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    with contextlib.suppress(Exception):  # how the stream reports it varies by version
        await response(SCOPE, receive, send)
    assert await admitted(limiter, who, "r2")


async def test_an_error_frees_the_slot_and_carries_the_headers(store: Store) -> None:
    limiter, who = await concurrent_one(store)

    async def work() -> Response:
        raise PortwayError("the model failed", headers={"x-own": "1"})

    with pytest.raises(PortwayError) as failed:
        await under_limits(limiter, ctx(who, "r1"), 10, Body(), work)
    assert failed.value.headers["x-own"] == "1"
    assert failed.value.headers["x-ratelimit-remaining-requests"] == "99"
    assert await admitted(limiter, who, "r2")


async def test_a_cancelled_request_frees_the_slot(store: Store) -> None:
    limiter, who = await concurrent_one(store)
    started = asyncio.Event()

    async def work() -> Response:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError

    request = asyncio.create_task(under_limits(limiter, ctx(who, "r1"), 10, Body(), work))
    await started.wait()
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    assert await admitted(limiter, who, "r2")
