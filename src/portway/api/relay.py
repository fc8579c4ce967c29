"""HTTP glue for hosted (upstream) models, shared by every endpoint.

An endpoint's route parses its body with its request model as usual, resolves the
model, and, if the model's backend is a :class:`~portway.backends.base.RelayBackend`,
returns ``await relay(request, ctx, entry, ENDPOINT, local)`` instead of calling
its serving layer. ``local`` serves the same request with a local model of the
given name: the relay calls it when a hosted model's chain of fallbacks reaches a
local model (every hosted model before it failed before its first byte). The
answer is then the local model's, in OpenAI's shape, and names the model that
answered, as a hosted fallback's answer does (and as LiteLLM's proxy does
after a fallback).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import Request
from starlette.responses import Response

from portway.api.deps import services
from portway.api.disconnect import cancel_on_disconnect
from portway.backends.base import RelayBackend
from portway.registry.models import ModelEntry
from portway.serving.context import RequestContext
from portway.serving.relay.endpoints import RelayEndpoint
from portway.serving.relay.service import LocalFallback
from portway.sse import RelayedEventStreamResponse

log = logging.getLogger("portway.relay")

LocalServe = Callable[[str], Awaitable[Response]]
"""Serves the request with the local model of the given name."""


async def relay_if_hosted(
    request: Request,
    ctx: RequestContext,
    model: str,
    endpoint: RelayEndpoint,
    local: LocalServe | None = None,
) -> Response | None:
    """The relayed response when ``model`` is hosted upstream; None for a local one."""
    entry = services(request).registry.resolve(model, ctx.principal)
    if not isinstance(entry.backend, RelayBackend):
        return None
    return await relay(request, ctx, entry, endpoint, local)


async def relay(
    request: Request,
    ctx: RequestContext,
    entry: ModelEntry,
    endpoint: RelayEndpoint,
    local: LocalServe | None = None,
) -> Response:
    """Relay the request to ``entry``'s upstream: JSON, or a stream of events; or
    serve it with a local fallback (``local``)."""
    try:
        return await _relay(request, ctx, entry, endpoint)
    except LocalFallback as handoff:
        if local is None:
            raise handoff.error from None
        log.info(
            "%s: %s failed (%s); served by its local fallback %s",
            ctx.request_id,
            entry.name,
            handoff.error.message,
            handoff.entry.name,
        )
        return await local(handoff.entry.name)


async def _relay(
    request: Request, ctx: RequestContext, entry: ModelEntry, endpoint: RelayEndpoint
) -> Response:
    found = services(request)
    body = await request.body()
    service, base_url = found.relay, found.settings.public_base_url  # never the Host header
    call = service.accept(ctx, entry, body, endpoint, base_url=base_url)
    if call.stream:
        stream = await cancel_on_disconnect(request, service.stream(call))
        return RelayedEventStreamResponse(stream.frames, stream.error_frame)
    body = await cancel_on_disconnect(request, service.complete(call))
    return Response(body, media_type="application/json")
