"""The only place that writes server-sent events.

Chat events are ``data: {json}\\n\\n``; a finished stream ends with ``data: [DONE]``;
an error after the stream began is sent as ``data: {"error": {...}}`` and ends
it. Responses API events (:class:`NamedEventStreamResponse`) are
``event: {type}\\ndata: {json}\\n\\n``, end without ``[DONE]``, and report such an
error as an ``error`` event. A client that disconnects cancels the producer at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from portway.aio import Disconnected, aclose, disconnected, unless_disconnected
from portway.errors import PortwayError

log = logging.getLogger("portway.sse")

DONE = b"data: [DONE]\n\n"


def encode(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode("utf-8") + b"\n\n"


def error_event(exc: BaseException) -> bytes:
    error = exc if isinstance(exc, PortwayError) else PortwayError()
    return encode(error.body())


def encode_named(payload: dict[str, Any]) -> bytes:
    """``event: {type}`` then the ``data:`` line, as OpenAI sends Responses events."""
    return b"event: " + str(payload["type"]).encode("utf-8") + b"\n" + encode(payload)


def responses_error_event(exc: BaseException, sequence_number: int) -> bytes:
    """The Responses API's ``error`` event for ``exc``, numbered ``sequence_number``."""
    body = (exc if isinstance(exc, PortwayError) else PortwayError()).body()["error"]
    fields = {key: body[key] for key in ("code", "message", "param")}
    return encode_named({"type": "error", **fields, "sequence_number": sequence_number})


def relayed(data: bytes, name: bytes | None = None) -> bytes:
    """An event whose ``data`` an upstream already encoded, passed on as it came
    (under ``event: {name}`` when it has a name)."""
    head = b"event: " + name + b"\n" if name else b""
    return head + b"data: " + data + b"\n\n"


class EventStreamResponse(Response):
    """An ASGI response streaming ``events`` as server-sent events."""

    media_type = "text/event-stream"

    def __init__(
        self,
        events: AsyncIterator[Any],
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
            await _until_disconnect(self._stream(send), receive)
        finally:
            await aclose(self.events)

    def frame(self, event: Any) -> bytes:
        return encode(event)

    def tail(self, error: BaseException | None, sent: int) -> bytes:
        """What ends the stream: ``[DONE]``, or the error after ``sent`` events."""
        return DONE if error is None else error_event(error)

    async def _stream(self, send: Send) -> None:
        sent = 0
        error: BaseException | None = None
        try:
            async for event in self.events:
                body = self.frame(event)
                await send({"type": "http.response.body", "body": body, "more_body": True})
                sent += 1
        except PortwayError as exc:
            error = exc
        except Exception as exc:
            log.exception("stream failed", exc_info=exc)
            error = exc
        tail = self.tail(error, sent)
        await send({"type": "http.response.body", "body": tail, "more_body": False})


class NamedEventStreamResponse(EventStreamResponse):
    """Responses API events: each names its ``type``; no ``[DONE]``; an error is
    an ``error`` event numbered after the ``sent`` events (numbered from 0)."""

    def frame(self, event: Any) -> bytes:
        return encode_named(event)

    def tail(self, error: BaseException | None, sent: int) -> bytes:
        return b"" if error is None else responses_error_event(error, sent)


class RelayedEventStreamResponse(EventStreamResponse):
    """Frames an upstream already encoded, relayed as they come (they carry their
    own end); a failure after the stream began ends it with ``error_frame(error)``."""

    def __init__(
        self, frames: AsyncIterator[bytes], error_frame: Callable[[BaseException], bytes]
    ) -> None:
        super().__init__(frames)
        self.error_frame = error_frame

    def frame(self, event: Any) -> bytes:
        frame: bytes = event
        return frame

    def tail(self, error: BaseException | None, sent: int) -> bytes:
        return b"" if error is None else self.error_frame(error)


async def _until_disconnect(work: Coroutine[Any, Any, None], receive: Receive) -> None:
    """Run ``work``, cancelled if the client disconnects first."""
    with contextlib.suppress(Disconnected):
        await unless_disconnected(work, lambda: disconnected(receive))
