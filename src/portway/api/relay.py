"""HTTP glue for hosted (upstream) models, shared by every endpoint.

An endpoint's route parses its body with its request model as usual, resolves the
model, and, if the model's backend is a :class:`~portway.backends.base.RelayBackend`,
returns ``await relay(request, ctx, entry, ENDPOINT)`` instead of calling its
serving layer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
from fastapi import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from portway.aio import aclose
from portway.api.deps import services
from portway.api.disconnect import cancel_on_disconnect
from portway.errors import PortwayError
from portway.registry.models import ModelEntry
from portway.serving.context import RequestContext
from portway.serving.relay import RelayStream
from portway.serving.relay_endpoints import RelayEndpoint

log = logging.getLogger("portway.relay")


async def relay(
    request: Request, ctx: RequestContext, entry: ModelEntry, endpoint: RelayEndpoint
) -> Response:
    """Relay the request to ``entry``'s upstream: JSON, or a stream of events."""
    service = services(request).relay
    call = service.accept(ctx, entry, await request.body(), endpoint)
    if call.stream:
        return RelayStreamResponse(await cancel_on_disconnect(request, service.stream(call)))
    body = await cancel_on_disconnect(request, service.complete(call))
    return Response(body, media_type="application/json")


class RelayStreamResponse(Response):
    """Sends a relayed stream's frames as they come. A failure after the stream
    began ends it with the endpoint's error event (``portway.sse``'s encoding); a
    client that disconnects closes the stream, and so the upstream request, at once."""

    def __init__(self, stream: RelayStream) -> None:
        self.stream = stream
        self.status_code = 200
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            async with anyio.create_task_group() as group:
                group.start_soon(_cancel_on_disconnect, receive, group.cancel_scope.cancel)
                await self._send_frames(send)
                group.cancel_scope.cancel()
        finally:
            await aclose(self.stream.frames)

    async def _send_frames(self, send: Send) -> None:
        tail = b""
        try:
            async for frames in self.stream.frames:
                if frames:
                    await send({"type": "http.response.body", "body": frames, "more_body": True})
        except PortwayError as exc:
            tail = self.stream.error_frame(exc)
        except Exception as exc:
            log.exception("relayed stream failed", exc_info=exc)
            tail = self.stream.error_frame(exc)
        await send({"type": "http.response.body", "body": tail, "more_body": False})


async def _cancel_on_disconnect(receive: Receive, cancel: Callable[[], None]) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            cancel()
            return
