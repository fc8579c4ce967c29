"""The only place that writes server-sent events.

Events are ``data: {json}\\n\\n``; a finished stream ends with ``data: [DONE]``;
an error after the stream began is sent as ``data: {"error": {...}}`` and ends
it. A client that disconnects cancels the producer at once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from portway.aio import aclose
from portway.errors import PortwayError

log = logging.getLogger("portway.sse")

DONE = b"data: [DONE]\n\n"


def encode(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode("utf-8") + b"\n\n"


def error_event(exc: BaseException) -> bytes:
    error = exc if isinstance(exc, PortwayError) else PortwayError()
    return encode(error.body())


class EventStreamResponse(Response):
    """An ASGI response streaming ``events`` as server-sent events."""

    media_type = "text/event-stream"

    def __init__(
        self,
        events: AsyncIterator[dict[str, Any]],
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.events = events
        self.extra_headers = headers or {}
        self.status_code = 200
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ] + [(key.lower().encode(), value.encode()) for key, value in self.extra_headers.items()]
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            async with anyio.create_task_group() as group:
                group.start_soon(_cancel_on_disconnect, receive, group.cancel_scope.cancel)
                await self._stream(send)
                group.cancel_scope.cancel()
        finally:
            await aclose(self.events)

    async def _stream(self, send: Send) -> None:
        try:
            async for event in self.events:
                await send({"type": "http.response.body", "body": encode(event), "more_body": True})
            tail = DONE
        except PortwayError as exc:
            tail = error_event(exc)
        except Exception as exc:
            log.exception("stream failed", exc_info=exc)
            tail = error_event(exc)
        await send({"type": "http.response.body", "body": tail, "more_body": False})


async def _cancel_on_disconnect(receive: Receive, cancel: Callable[[], None]) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            cancel()
            return
