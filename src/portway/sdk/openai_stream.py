"""Stream a chat completion from an upstream through Portway's upstream client:
retries before the first byte, the timeouts of ``UpstreamTimeouts``, and the
upstream's errors as Portway's (``portway.backends.upstream``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from portway.backends.upstream.backend import Exchange, UpstreamBackend, UpstreamFailure
from portway.backends.upstream.pool import Outcome
from portway.backends.upstream.sse import EventSplitter, parse_event, parse_json
from portway.errors import PortwayError


async def _open(upstream: UpstreamBackend, body: bytes, until: float) -> Exchange:
    loop = asyncio.get_running_loop()
    attempt = 1
    while True:
        try:
            return await upstream.open("/chat/completions", body, stream=True, until=until)
        except PortwayError as exc:
            if not isinstance(exc, UpstreamFailure) or not exc.retryable:
                raise
            wait = upstream.retry.wait_before(attempt, exc.retry_after, until - loop.time())
            if wait is None:
                raise
        await asyncio.sleep(wait)
        attempt += 1


async def stream_chunks(upstream: UpstreamBackend, body: bytes) -> AsyncIterator[dict[str, Any]]:
    """The JSON chunks of the upstream's stream, until ``[DONE]`` or its end."""
    until = asyncio.get_running_loop().time() + upstream.timeouts.total
    exchange = await _open(upstream, body, until)
    outcome = Outcome.FAILED
    splitter = EventSplitter()
    try:
        while (piece := await exchange.next_piece(until)) is not None:
            for raw in splitter.feed(piece):
                event = parse_event(raw)
                if event is None:
                    continue
                if event.data.strip() == b"[DONE]":
                    outcome = Outcome.OK
                    return
                yield parse_json(event.data)
        outcome = Outcome.OK
    except GeneratorExit:
        outcome = Outcome.NEUTRAL
        raise
    finally:
        await exchange.finish(outcome)
