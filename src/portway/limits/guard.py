"""Limits around one model request: admit it (or answer the 429), hook its ledger
rows to the ticket, put the rate limit headers on whatever answers it, and free
its slot once the answer's last byte is sent (or the request fails)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from portway.errors import PortwayError
from portway.limits.estimate import request_estimate
from portway.limits.limiter import Limiter
from portway.limits.model import Ticket
from portway.serving.context import RequestContext
from portway.serving.usage import Meter


async def under_limits(
    limiter: Limiter,
    ctx: RequestContext,
    body_bytes: int,
    body: object,
    work: Callable[[], Awaitable[Response]],
) -> Response:
    """``work()``'s response, if ``ctx``'s principal is within its limits."""
    estimate = request_estimate(body_bytes, body)
    ticket = await limiter.admit(ctx.principal, ctx.request_id, estimate)
    if ticket is None:
        return await work()
    ctx.on_usage = partial(_count, limiter, ticket, ctx.on_usage)
    try:
        response = await work()
    except BaseException as exc:
        if isinstance(exc, PortwayError):
            exc.headers = {**ticket.headers, **exc.headers}
        await _finish(limiter, ticket)
        raise
    return LimitedResponse(response, ticket, limiter)


def _count(
    limiter: Limiter,
    ticket: Ticket,
    then: Callable[[Meter, str], None] | None,
    meter: Meter,
    status: str,
) -> None:
    """A ledger row of the request was written: count its tokens, then tell ``then``."""
    limiter.record(ticket, meter.prompt_tokens + meter.completion_tokens)
    if then is not None:
        then(meter, status)


async def _finish(limiter: Limiter, ticket: Ticket) -> None:
    """Settle ``ticket`` even if the task awaiting it is being cancelled."""
    await asyncio.shield(asyncio.ensure_future(limiter.finish(ticket)))


class LimitedResponse(Response):
    """``inner``, sent with the ticket's headers; the ticket is settled once it ends."""

    def __init__(self, inner: Response, ticket: Ticket, limiter: Limiter) -> None:
        self.inner, self.ticket, self.limiter = inner, ticket, limiter
        self.status_code = inner.status_code
        self.background = None
        self._extra = [(name.encode(), value.encode()) for name, value in ticket.headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *self._extra]}
            await send(message)

        try:
            await self.inner(scope, receive, send_with_headers)
        finally:
            await _finish(self.limiter, self.ticket)
