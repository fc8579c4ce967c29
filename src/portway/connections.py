"""The HTTP connections: uvicorn's httptools protocol with the deadlines and limits
uvicorn does not enforce by itself (it never times out a slow head or body).

- A request's head (request line and headers) must arrive within ``header_timeout``
  seconds of the connection opening (or of the request's first byte on a kept-alive
  connection), in at most ``max_header_bytes`` bytes and ``max_headers`` headers:
  otherwise 408 or 431, and the connection closes.
- A body must arrive within ``body_timeout`` seconds of its head. The application
  answers a body it waits for with a 408 (``middleware.BodyLimit``); here a late
  body ends its connection, whoever waits for it.
- A client that reads nothing of a response for ``stall_timeout`` seconds while
  the send buffers are full loses its connection: the application sees a
  disconnect, so its work is cancelled and its model slot freed.
- Past ``max_connections`` open connections (WebSockets included), a new
  connection's request gets a 503 and the connection closes; the others go on.

Refusals are OpenAI error bodies; the connection is half-closed after them and
lingers briefly, so that the client reads the answer rather than a reset.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from portway.errors import HeadersTooLarge, PortwayError, RequestTimeout, TooManyConnections

log = logging.getLogger("portway.connections")

LINGER_SECONDS = 2.0
"""How long a refused connection still reads (and drops) what its client sends."""


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float
    body_timeout: float
    stall_timeout: float
    max_header_bytes: int
    max_headers: int
    max_connections: int


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedProtocol]:
    """The protocol class to give uvicorn (``Config(http=...)``) for ``limits``."""
    return type("GuardedProtocol", (GuardedProtocol,), {"limits": limits})


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with ``limits`` enforced (see the module)."""

    limits: ClassVar[ConnectionLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._admitted = True
        self._refused = False
        self._unsent = 0  # bytes waiting to be sent when the stall timer was armed
        self._start_head()

    def _start_head(self) -> None:
        """Waiting for a request head: count it from zero."""
        self._in_head = True
        self._head_bytes = 0  # what arrived while the head was incomplete
        self._head_size = 0  # the parsed request line and headers
        self._header_count = 0

    # Connection events

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._admitted = len(self.connections) <= self.limits.max_connections
        self._arm("head", self.limits.header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering: read and drop
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and not self._refused and self._head_too_large(self._head_bytes):
            self._refuse(HeadersTooLarge(self.limits.max_header_bytes, self.limits.max_headers))

    def pause_writing(self) -> None:
        super().pause_writing()
        self._unsent = self.transport.get_write_buffer_size()
        self._arm("stall", self.limits.stall_timeout, self._stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._disarm("stall")

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if "head" not in self._timers:
            self._arm("head", self.limits.header_timeout, self._head_timed_out)

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        self._header_count += 1
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm("head")
        if self._refused:
            return
        if self._head_too_large(self._head_size):
            self._refuse(HeadersTooLarge(self.limits.max_header_bytes, self.limits.max_headers))
            return
        if not self._admitted:
            log.warning("refused a connection: %d are open", len(self.connections))
            self._refuse(TooManyConnections(self.limits.max_connections))
            return
        super().on_headers_complete()
        if not (self.parser.should_upgrade() and self._should_upgrade()):
            self._arm("body", self.limits.body_timeout, self._body_timed_out)

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm("body")
        self._start_head()
        if not self._refused:
            super().on_message_complete()

    # Deadlines

    def _head_too_large(self, size: int) -> bool:
        limits = self.limits
        return size > limits.max_header_bytes or self._header_count > limits.max_headers

    def _head_timed_out(self) -> None:
        if self._responding():  # a pipelined head is late: end after this response
            self.cycle.keep_alive = False
            return
        self._refuse(RequestTimeout("headers", self.limits.header_timeout))

    def _body_timed_out(self) -> None:
        if self._responding():  # the application answers (408 if it waits), then it closes
            self.cycle.keep_alive = False
        else:
            self.transport.close()

    def _stalled(self) -> None:
        unsent = self.transport.get_write_buffer_size()
        if unsent < self._unsent:  # the client read a little: wait on
            self._unsent = unsent
            self._arm("stall", self.limits.stall_timeout, self._stalled)
            return
        log.info("dropped a client that read nothing for %gs", self.limits.stall_timeout)
        self.transport.abort()

    def _responding(self) -> bool:
        cycle = self.cycle
        return cycle is not None and not cycle.response_complete

    # Helpers

    def _arm(self, name: str, seconds: float, action: Callable[[], None]) -> None:
        self._disarm(name)
        self._timers[name] = self.loop.call_later(seconds, action)

    def _disarm(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    def _refuse(self, error: PortwayError) -> None:
        """Answer ``error`` and close: half-close now, fully after a short linger."""
        self._refused = True
        for name in ("head", "body"):
            self._disarm(name)
        self.transport.write(_response(error))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._arm("linger", LINGER_SECONDS, self.transport.close)


def _response(error: PortwayError) -> bytes:
    """``error`` as a complete HTTP/1.1 response that closes its connection."""
    body = json.dumps(error.body()).encode()
    headers = {
        "content-type": "application/json",
        "content-length": str(len(body)),
        **{key.lower(): value for key, value in error.headers.items()},
        "connection": "close",
    }
    lines = b"".join(f"{key}: {value}\r\n".encode("latin-1") for key, value in headers.items())
    return STATUS_LINE[error.status] + lines + b"\r\n" + body
