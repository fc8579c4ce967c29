"""One hop from a route to what serves it: :func:`serve_or_relay`.

A model route parses its body with its request model, then returns
``await serve_or_relay(request, ctx, body, ENDPOINT, serve)``. The model is
resolved once, here: a local model's request goes to ``serve(request, ctx, body,
entry)`` (the route's call into its serving layer); a hosted model's is relayed
to its upstream. When a hosted model's chain of fallbacks reaches a local model
(every hosted model before it failed before its first byte), ``serve`` answers
with that local model: the answer is in OpenAI's shape and names the model that
answered, as a hosted fallback's answer does (and as LiteLLM's proxy does after
a fallback).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any, Protocol, Self, TypeVar

from fastapi import Request
from starlette.responses import Response

from portway.api.deps import services
from portway.api.disconnect import cancel_on_disconnect
from portway.backends.base import RelayBackend
from portway.limits.guard import under_limits
from portway.registry.models import ModelEntry
from portway.serving.context import RequestContext
from portway.serving.relay.endpoints import RelayEndpoint
from portway.serving.relay.service import LocalFallback
from portway.sse import RelayedEventStreamResponse

log = logging.getLogger("portway.relay")


class NamesModel(Protocol):
    """A request body naming its ``model`` (every model route's pydantic body)."""

    model: str

    def model_copy(
        self, *, update: Mapping[str, Any] | None = None, deep: bool = False
    ) -> Self: ...


B = TypeVar("B", bound=NamesModel)

Serve = Callable[[Request, RequestContext, B, ModelEntry], Awaitable[Response]]
"""A route's local serving: the body, with the local model it names (the entry given)."""

LocalServe = Callable[[ModelEntry], Awaitable[Response]]
"""Serves the request with the given local model (a hosted model's fallback)."""


async def serve_or_relay(
    request: Request, ctx: RequestContext, body: B, endpoint: RelayEndpoint, serve: Serve[B]
) -> Response:
    """Resolve ``body.model`` once; serve it locally with ``serve`` or relay it
    upstream; within the principal's limits (the one place they are enforced)."""
    limiter = services(request).limiter
    if limiter is None:
        return await _serve_or_relay(request, ctx, body, endpoint, serve)
    size = len(await request.body())
    work = partial(_serve_or_relay, request, ctx, body, endpoint, serve)
    return await under_limits(limiter, ctx, size, body, work)


async def _serve_or_relay(
    request: Request, ctx: RequestContext, body: B, endpoint: RelayEndpoint, serve: Serve[B]
) -> Response:
    entry = services(request).registry.resolve(body.model, ctx.principal)
    if not isinstance(entry.backend, RelayBackend):
        return await serve(request, ctx, body, entry)

    async def local(fallback: ModelEntry) -> Response:
        return await serve(request, ctx, body.model_copy(update={"model": fallback.name}), fallback)

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
        return await local(handoff.entry)


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
