"""The upstream SSE reader's bounds: linear splitting however the bytes are cut,
every line ending the SSE specification allows, and a cap on a single event."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from portway.aio import aclose
from portway.backends.upstream.backend import upstream_backend
from portway.backends.upstream.http_client import open_session
from portway.backends.upstream.sse import EventSplitter, EventTooLarge, MalformedStream
from portway.errors import PortwayError
from portway.registry.catalog import OpenAISpec
from portway.registry.models import ModelEntry, Registry
from portway.registry.refs import ModelRef
from portway.serving.context import RequestContext
from portway.serving.relay.endpoints import CHAT
from portway.serving.relay.service import RelayService
from tests.unit.doubles import Ledger, context, user


def _feed_all(splitter: EventSplitter, data: bytes, size: int) -> list[bytes]:
    events: list[bytes] = []
    for start in range(0, len(data), size):
        events += splitter.feed(data[start : start + size])
    return events


def test_one_byte_pieces_of_a_big_event_are_scanned_once() -> None:
    event = b"data: " + b"x" * 200_000
    stream = event + b"\n\n" + b"data: {}\n\n"
    splitter = EventSplitter()
    assert _feed_all(splitter, stream, 1) == [event, b"data: {}"]
    assert splitter.scanned <= 2 * len(stream)  # a rescan per piece would be ~len**2 / 2


def test_many_events_in_one_piece_are_scanned_once() -> None:
    stream = b"data: {}\n\n" * 10_000
    splitter = EventSplitter()
    assert splitter.feed(stream) == [b"data: {}"] * 10_000
    assert splitter.scanned == len(stream)


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
@pytest.mark.parametrize("size", [1, 2, 3, 1000])
def test_every_line_ending_splits_events_however_cut(newline: bytes, size: int) -> None:
    stream = newline.join([b"event: a", b"data: 1", b"", b"data: 2", b"", b""])
    splitter = EventSplitter()
    assert _feed_all(splitter, stream, size) == [b"event: a\ndata: 1", b"data: 2"]
    assert splitter.pending == b""


def test_a_cr_that_ends_a_piece_is_one_line_end_with_the_next_lf() -> None:
    splitter = EventSplitter()
    assert splitter.feed(b"data: 1\r") == []
    assert splitter.feed(b"\n") == []  # the \r\n of one line, not two line ends
    assert splitter.feed(b"data: 2\r\r") == [b"data: 1\ndata: 2"]


def test_an_event_that_never_ends_is_refused_at_the_limit() -> None:
    splitter = EventSplitter(max_event_bytes=1024)
    splitter.feed(b"data: " + b"x" * 1000)
    splitter.feed(b"x" * 18)  # 1024 bytes: still within the limit
    with pytest.raises(EventTooLarge) as caught:
        splitter.feed(b"x")
    assert isinstance(caught.value, MalformedStream)  # a 502 upstream_error
    assert caught.value.status == 502
    assert "1024 bytes" in caught.value.message


def test_a_complete_event_over_the_limit_is_refused() -> None:
    splitter = EventSplitter(max_event_bytes=1024)
    with pytest.raises(EventTooLarge):
        splitter.feed(b"data: " + b"x" * 2000 + b"\n\n")


def test_events_under_the_limit_pass_however_many() -> None:
    splitter = EventSplitter(max_event_bytes=1024)
    event = b"data: " + b"x" * 1000
    assert _feed_all(splitter, (event + b"\n\n") * 50, 700) == [event] * 50


# ------------------------------------------- through the relay, over real HTTP

FIRST = b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"up",'
FIRST += b'"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n'


class Endless:
    """An upstream whose stream starts an event and never ends it (on ``/good-first``
    after one good event, once ``go_on`` is set)."""

    def __init__(self) -> None:
        self.base_url = ""
        self.sent = 0
        self.go_on = asyncio.Event()

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        if request.path.startswith("/good-first"):
            await response.write(FIRST)
            await self.go_on.wait()
        with contextlib.suppress(ConnectionError):  # the relay hangs up: as it should
            await response.write(b"data: ")
            while self.sent < 64 * 1024 * 1024:  # far past the limit: the relay stops first
                await response.write(b"x" * 4096)
                self.sent += 4096
        return response


@pytest.fixture
async def endless() -> AsyncIterator[Endless]:
    upstream = Endless()

    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", upstream.stream)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    upstream.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield upstream
    await runner.cleanup()


def _service(base: str) -> tuple[RelayService, ModelEntry]:
    spec = OpenAISpec.model_validate(
        {
            "user": "up",
            "app": "sse",
            "model": "endless",
            "backend": "openai",
            "base_url": base,
            "upstream_model": "up",
            "max_event_bytes": 64 * 1024,
            "retries": {"max_attempts": 1},
            "timeouts": {"idle": 30, "total": 60},
        }
    )
    entry = ModelEntry(ModelRef("up", "sse", "endless"), "0" * 32, upstream_backend(spec))
    service = RelayService(Registry([entry]), Ledger(), open_session())
    entry.backend.attach(service.session, None)  # type: ignore[attr-defined]
    return service, entry


def _ctx() -> RequestContext:
    return context("chat.completions", user("up"))


async def _read_into(frames: list[bytes], source: AsyncIterator[bytes]) -> None:
    async for frame in source:
        frames.append(frame)


RAW = json.dumps({"messages": [{"role": "user", "content": "hi"}], "stream": True}).encode()


async def test_an_endless_first_event_is_a_502(endless: Endless) -> None:
    service, entry = _service(endless.base_url + "/v1")
    try:
        with pytest.raises(PortwayError) as caught:
            await service.stream(service.accept(_ctx(), entry, RAW, CHAT))
    finally:
        await service.close()
    assert (caught.value.status, caught.value.code) == (502, "upstream_error")
    assert "65536 bytes" in caught.value.message
    assert endless.sent < 16 * 1024 * 1024  # read about the limit, then hung up


async def test_an_endless_event_mid_stream_ends_with_an_error_event(
    endless: Endless,
) -> None:
    service, entry = _service(endless.base_url + "/good-first/v1")
    frames: list[bytes] = []
    try:
        stream = await service.stream(service.accept(_ctx(), entry, RAW, CHAT))
        endless.go_on.set()
        with pytest.raises(MalformedStream) as caught:
            await _read_into(frames, stream.frames)
        frames.append(stream.error_frame(caught.value))
        await aclose(stream.frames)
    finally:
        await service.close()
    assert b'"content":"hi"' in frames[0]
    assert b'"code":"upstream_error"' in frames[-1]
    assert endless.sent < 16 * 1024 * 1024
