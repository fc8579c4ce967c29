"""ASGI middleware: request ids and the one log line per request; the body's
limits (size and time)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portway.errors import PayloadTooLarge, PortwayError, RequestTimeout
from portway.metrics.service import Metrics

log = logging.getLogger("portway.access")

LOGGED_FIELDS = ("model", "prompt_tokens", "completion_tokens")


class RequestLog:
    """Gives each request an id (``x-request-id``) and logs one line when it ends:
    id, method, path, status, model, token counts and latency; never content.
    Each request is counted in ``metrics`` too, if given."""

    def __init__(self, app: ASGIApp, metrics: Metrics | None = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = "req_" + secrets.token_hex(12)
        fields: dict[str, Any] = {}
        scope.setdefault("state", {}).update(request_id=request_id, log_fields=fields)
        status = [500]
        started_response = [False]
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                started_response[0] = True
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            log.exception("unhandled error in %s", request_id, exc_info=exc)
            if status[0] == 500 and not started_response[0]:
                await _send_error(send_with_id, PortwayError())
        finally:
            latency = (time.perf_counter() - started) * 1000
            if self.metrics is not None:
                self.metrics.request_done(fields.get("model", ""), scope, status[0], latency / 1000)
            extra = " ".join(f"{key}={fields[key]}" for key in LOGGED_FIELDS if key in fields)
            log.info(
                "%s %s %s %d %s latency_ms=%.1f",
                request_id,
                scope["method"],
                scope["path"],
                status[0],
                extra,
                latency,
            )


class BodyLimit:
    """Refuses bodies over ``limit`` bytes with a 413, by header or by counting, and
    bodies still incomplete ``timeout`` seconds after the request began with a 408
    (whose ``Connection: close`` ends the connection: the rest is never read)."""

    def __init__(self, app: ASGIApp, limit: int, timeout: float = 60.0) -> None:
        self.app = app
        self.limit = limit
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit() and int(value) > self.limit:
                await _send_error(send, PayloadTooLarge(self.limit))
                return
        seen = [0]
        deadline = asyncio.get_running_loop().time() + self.timeout
        complete = [False]

        async def counted() -> Message:
            if complete[0]:  # the body is in: what is left to receive is the disconnect
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise RequestTimeout("body", self.timeout) from None
            complete[0] = not message.get("more_body", False)
            seen[0] += len(message.get("body", b""))
            if seen[0] > self.limit:
                raise PayloadTooLarge(self.limit)
            return message

        await self.app(scope, counted, send)


async def _send_error(send: Send, error: PortwayError) -> None:
    from portway.api.errors import error_response

    response = error_response(error)
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }
    )
    await send({"type": "http.response.body", "body": response.body})
