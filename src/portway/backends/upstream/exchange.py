"""One attempt's open response from an upstream, read piece by piece."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import anyio

from portway.backends.upstream.errors import UpstreamUnavailable, timed_out
from portway.backends.upstream.pool import Endpoint, EndpointPool, Outcome
from portway.errors import PortwayError

MAX_BODY = 64 * 1024 * 1024
"""The largest unary upstream body relayed (base64 images are big)."""

DRAIN_SECONDS = 1.0


@dataclass
class Exchange:
    """One attempt's open 2xx response: read its body piece by piece, then finish
    it once (which closes the connection if the body was not read to its end)."""

    response: aiohttp.ClientResponse
    endpoint: Endpoint
    pool: EndpointPool
    model: str
    idle: float
    _pieces: AsyncIterator[bytes] | None = field(default=None, repr=False)
    _finished: bool = field(default=False, repr=False)
    _at_end: bool = field(default=False, repr=False)

    @property
    def content_type(self) -> str:
        found: str = self.response.headers.get("content-type", "")
        return found

    async def next_piece(self, until: float) -> bytes | None:
        """The next piece of the body (None at its end), waiting at most the
        model's idle gap and never past ``until`` (event loop time)."""
        if self._pieces is None:
            self._pieces = self.response.content.iter_any()
        loop = asyncio.get_running_loop()
        gap_ends = loop.time() + self.idle
        try:
            async with asyncio.timeout_at(min(until, gap_ends)):
                piece = await anext(self._pieces, None)
            self._at_end = piece is None
            return piece
        except TimeoutError as exc:
            what = f"sent nothing for {self.idle:g}s" if gap_ends <= until else "took too long"
            raise timed_out(f"The upstream of '{self.model}' {what}.") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailable(
                f"The upstream of '{self.model}' broke off its response ({type(exc).__name__})."
            ) from exc

    async def read_all(self, until: float, limit: int = MAX_BODY) -> bytes:
        """The rest of the body (see :meth:`next_piece`), at most ``limit`` bytes."""
        pieces: list[bytes] = []
        size = 0
        while (piece := await self.next_piece(until)) is not None:
            size += len(piece)
            if size > limit:
                raise UpstreamUnavailable(
                    f"The upstream of '{self.model}' sent a body over {limit} bytes."
                )
            pieces.append(piece)
        return b"".join(pieces)

    async def finish(self, outcome: Outcome) -> None:
        """Close the response and give its endpoint back with ``outcome`` (once).

        After a success the rest of the body (the end of a chunked stream after its
        last event) is read for up to ``DRAIN_SECONDS``, so that the connection goes
        back to the pool instead of being closed."""
        if self._finished:
            return
        self._finished = True
        self.pool.release(self.endpoint, outcome)
        if outcome is Outcome.OK and not self._at_end:
            with anyio.CancelScope(shield=True), contextlib.suppress(PortwayError):
                until = asyncio.get_running_loop().time() + DRAIN_SECONDS
                while await self.next_piece(until) is not None:
                    pass
        if self._at_end:
            self.response.release()  # the connection goes back to the pool
        else:
            self.response.close()  # a half-read body: the connection is closed
