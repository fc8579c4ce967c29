"""Stream a chat completion from an upstream through Portway's upstream client:
retries before the first byte, the timeouts of ``UpstreamTimeouts``, and the
upstream's errors as Portway's (``portway.backends.upstream``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from portway.backends.upstream.backend import UpstreamBackend
from portway.backends.upstream.pool import Outcome
from portway.backends.upstream.sse import EventSplitter, parse_event, parse_json


async def stream_chunks(upstream: UpstreamBackend, body: bytes) -> AsyncIterator[dict[str, Any]]:
    """The JSON chunks of the upstream's stream, until ``[DONE]`` or its end."""
    until = upstream.deadline()
    exchange = await upstream.retrying(
        partial(upstream.open, "/chat/completions", body, stream=True, until=until), until
    )
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
