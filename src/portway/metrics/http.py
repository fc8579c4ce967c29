"""Where ``/metrics`` is served: on the API port for a token with the ``admin``
scope (:data:`router`), and, with ``--metrics-address``, by a small server of its
own without a token (:class:`MetricsServer`), for a scraper on a private network."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from fastapi import APIRouter, Request, Response

from portway.api.deps import principal
from portway.metrics.service import CONTENT_TYPE, Metrics

log = logging.getLogger("portway.metrics")

router = APIRouter()

HEAD_LIMIT = 16 * 1024
HEAD_SECONDS = 10.0


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    who = await principal(request)
    who.require_scope("admin")
    found: Metrics = request.app.state.metrics
    return Response(found.render(), media_type=CONTENT_TYPE)


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9100`` for IPv6) as a host and a port; ValueError
    if it is not one."""
    host, colon, port = text.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not host or not port.isascii() or not port.isdigit():
        raise ValueError(f"{text!r} is not HOST:PORT")
    number = int(port)
    if not 0 < number < 65536:
        raise ValueError(f"{text!r}: the port must be 1-65535")
    return host, number


def _answer(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def answer(request_line: bytes, render: Callable[[], bytes]) -> bytes:
    """The whole response to one request: ``GET /metrics`` renders; the rest is refused."""
    parts = request_line.split()
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return _answer("400 Bad Request", b"bad request\n")
    method, target = parts[0], parts[1].split(b"?", 1)[0]
    if target != b"/metrics":
        return _answer("404 Not Found", b"not found: try /metrics\n")
    if method not in (b"GET", b"HEAD"):
        return _answer("405 Method Not Allowed", b"method not allowed\n")
    response = _answer("200 OK", render(), CONTENT_TYPE)
    return response.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" if method == b"HEAD" else response


class MetricsServer:
    """``GET /metrics`` on ``host:port``, one request per connection, no token.
    With several workers each listens on the address (``reuse_port``): any of
    them answers for all."""

    def __init__(self, metrics: Metrics, host: str, port: int, *, shared: bool = False) -> None:
        self.metrics = metrics
        self.host, self.port = host, port
        self.shared = shared
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, reuse_port=self.shared or None, limit=HEAD_LIMIT
        )
        log.info("metrics at http://%s:%d/metrics", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(HEAD_SECONDS):
                head = await reader.readuntil(b"\r\n\r\n")
            writer.write(answer(head.split(b"\r\n", 1)[0], self.metrics.render))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except ConnectionError:
            pass
        finally:
            writer.close()
