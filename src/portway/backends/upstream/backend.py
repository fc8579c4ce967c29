"""The ``openai`` backend: a model served by another OpenAI-compatible server.

It relays; it never generates. :meth:`UpstreamBackend.open` sends one request
body to one endpoint (replica) and returns the open response once its headers
are in with a 2xx status; every other outcome is raised as one of the upstream
errors below, which say whether trying again (or a fallback model) may help::

    UpstreamFailure (mixin: retryable, fallback, retry_after)
    ├── UpstreamUnavailable  502  no connection, 5xx, garbage, broken body, 401/403/404
    ├── UpstreamTimedOut     504  connect, first byte, idle gap or total deadline passed
    └── UpstreamRejected     4xx  the upstream's own status, message, type, param, code

Upstream 401, 403 and 404 mean Portway's key or model name is wrong, not the
client's request: they become 502s that do not repeat the upstream's words (an
upstream 401 message may quote part of the key). The API key is never logged,
never put into an error, and scrubbed from upstream messages that echo it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import aiohttp
import anyio

from portway import __version__
from portway.backends.base import Kind, RelayBackend
from portway.backends.upstream.http_client import open_session, proxy_for
from portway.backends.upstream.pool import (
    Endpoint,
    EndpointPool,
    NoEndpointAvailable,
    Outcome,
)
from portway.backends.upstream.retry import RetryPolicy, retry_after_seconds
from portway.errors import BadGateway, GatewayTimeout, PortwayError

if TYPE_CHECKING:  # the catalogue imports this family's spec.py: no import back at run time
    from portway.registry.catalog import OpenAISpec

T = TypeVar("T")

MAX_ERROR_BODY = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
"""The largest unary upstream body relayed (base64 images are big)."""

DRAIN_SECONDS = 1.0

RETRYABLE_STATUS = frozenset({408, 409, 429})
MISCONFIGURED_STATUS = {
    401: "refused Portway's API key",
    403: "refused Portway's access",
    404: "does not know the model or route Portway asked for",
}


class UpstreamFailure:
    """What the relay needs to know of an upstream error to decide what comes next."""

    retryable: bool = True
    """Another attempt may succeed (connection errors, timeouts, 408, 409, 429, 5xx)."""
    fallback: bool = True
    """A fallback model may serve instead (not for the client's own request errors)."""
    retry_after: float | None = None
    """Seconds the upstream asked to wait (``Retry-After``)."""


class UpstreamUnavailable(UpstreamFailure, BadGateway):
    """502: the upstream did not answer as its API promises."""

    def no_retry(self) -> UpstreamUnavailable:
        """This failure will not go away by trying the same model again (fallbacks may)."""
        self.retryable = False
        return self


class UpstreamTimedOut(UpstreamFailure, GatewayTimeout):
    """504: the upstream was slower than the model's timeouts allow."""


class UpstreamRejected(UpstreamFailure, PortwayError):
    """The upstream's own 4xx, relayed with its status, message, type, param and code."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after else None
        super().__init__(message, param=param, code=code, headers=headers)
        self.status = status
        self.type = type or "invalid_request_error"
        self.retryable = self.fallback = status in RETRYABLE_STATUS
        self.retry_after = retry_after


def timed_out(message: str) -> UpstreamTimedOut:
    return UpstreamTimedOut(message)


# --------------------------------------------------------------------------- errors


def _envelope(body: bytes) -> dict[str, Any]:
    """The error object of an upstream error body, whatever shape it came in."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    if isinstance(data, list) and data and isinstance(data[0], dict):
        data = data[0]  # some providers wrap the envelope in a list
    if not isinstance(data, dict):
        return {}
    error = data.get("error", data)
    if isinstance(error, str):
        return {"message": error}
    if not isinstance(error, dict):
        return {}
    if "message" not in error and isinstance(data.get("detail"), str):
        error = {**error, "message": data["detail"]}
    return error


def _text(value: object) -> str | None:
    return None if value is None else str(value)[:1000]


@dataclass
class Credentials:
    """The upstream's API key, where it goes, and how to scrub it from text."""

    header: str = "authorization"
    key: str | None = None

    def headers(self) -> dict[str, str]:
        if not self.key:
            return {}
        if self.header.lower() == "authorization":
            return {"authorization": f"Bearer {self.key}"}
        return {self.header: self.key}

    def scrub(self, text: str) -> str:
        return text.replace(self.key, "[redacted]") if self.key else text


# ----------------------------------------------------------------------- exchange


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


# ------------------------------------------------------------------------ backend


class UpstreamBackend(RelayBackend):
    """A model of the upstream's; ``kind`` comes from the catalogue (see
    :func:`upstream_backend`). Needs :meth:`attach` before its first request."""

    def __init__(self, spec: OpenAISpec) -> None:
        self.name = spec.reference
        self.upstream_model = spec.upstream_model
        self.timeouts = spec.timeouts
        self.retry = RetryPolicy.of(spec.retries)
        self.fallbacks = spec.fallbacks
        self.rehost_images = spec.rehost_images
        self.rehost_networks = spec.rehost_allowed_networks
        self.url_ttl = spec.url_ttl
        self.max_event_bytes = spec.max_event_bytes
        self.key_env = spec.api_key_env
        self.key_secret = spec.api_key_secret
        self.pool = EndpointPool(
            spec.urls, eject_after=spec.eject_after, eject_seconds=spec.eject_seconds
        )
        self.credentials = Credentials(spec.api_key_header)
        self._extra_headers = dict(spec.headers)
        self._headers: dict[str, str] = {}
        self._session: aiohttp.ClientSession | None = None
        self._own_session: aiohttp.ClientSession | None = None
        self._attached = False
        self._timeout = aiohttp.ClientTimeout(
            total=None,  # the relay times the rest itself: first byte, idle gap, deadline
            connect=self.timeouts.connect,
        )

    def attach(
        self, session: aiohttp.ClientSession | Sequence[object] | None, key: str | None
    ) -> None:
        """Use ``session`` (the relay's, shared by every upstream model) and the API
        ``key``. Without a session (None, or the httpx clients callers passed before
        the relay moved to aiohttp) the backend opens its own in the event loop of
        its first request."""
        self._session = session if isinstance(session, aiohttp.ClientSession) else None
        self._attached = True
        self.credentials.key = key
        self._headers = {
            "content-type": "application/json",
            "user-agent": f"portway/{__version__}",
            **self._extra_headers,
            **self.credentials.headers(),
        }

    async def close(self) -> None:
        """Close the session this backend opened itself (none when the relay's)."""
        if self._own_session is not None:
            await self._own_session.close()
            self._own_session = self._session = None

    @property
    def missing_key(self) -> str | None:
        """Where the key should have come from, if it was declared and not found."""
        if self.credentials.key:
            return None
        if self.key_env:
            return f"environment variable {self.key_env}"
        if self.key_secret:
            return f"secret {self.key_secret!r} (portway secret set {self.key_secret})"
        return None

    def deadline(self) -> float:
        """When a request to this model must be done, retries included (event
        loop time): ``timeouts.total`` from now."""
        return asyncio.get_running_loop().time() + self.timeouts.total

    def first_byte_deadline(self, until: float) -> float:
        """When an attempt's first byte must be in: ``timeouts.first_byte`` from
        now, and no later than ``until``."""
        return min(until, asyncio.get_running_loop().time() + self.timeouts.first_byte)

    async def retrying(
        self,
        attempt: Callable[[], Awaitable[T]],
        until: float,
        on_failure: Callable[[int, PortwayError], None] | None = None,
    ) -> T:
        """``attempt()``, again after each retryable upstream failure while the
        retry policy allows (backoff with jitter, at least ``Retry-After``, the
        wait ending before ``until``). ``on_failure(tries, error)`` hears of each
        upstream failure; the last one, or any other error, is raised."""
        loop = asyncio.get_running_loop()
        tries = 0
        while True:
            tries += 1
            try:
                return await attempt()
            except PortwayError as exc:
                if not isinstance(exc, UpstreamFailure):
                    raise
                if on_failure is not None:
                    on_failure(tries, exc)
                wait = None
                if exc.retryable:
                    wait = self.retry.wait_before(tries, exc.retry_after, until - loop.time())
                if wait is None:
                    raise
            await asyncio.sleep(wait)

    def health(self) -> list[dict[str, Any]]:
        return self.pool.health()

    async def open(self, path: str, body: bytes, *, stream: bool, until: float) -> Exchange:
        """Send ``body`` to ``{endpoint}{path}`` of the least busy endpoint; return
        once a 2xx status is in, no later than ``until`` (event loop time)."""
        if not self._attached:
            raise RuntimeError(f"{self.name}: attach() was not called")
        if self._session is None:
            self._session = self._own_session = open_session()
        if self.missing_key:
            raise UpstreamUnavailable(
                f"The model '{self.name}' has no API key: set its {self.missing_key}."
            ).no_retry()
        try:
            endpoint = self.pool.acquire()
        except NoEndpointAvailable as exc:
            raise UpstreamUnavailable(
                f"Every upstream endpoint of '{self.name}' is cooling down after failures; "
                f"the first returns in {exc.retry_in:.0f}s."
            ).no_retry() from exc
        headers = self._headers
        if stream:
            headers = {**headers, "accept": "text/event-stream"}
        response = await self._send(
            self._session, endpoint, endpoint.url + path, body, headers, until
        )
        exchange = Exchange(response, endpoint, self.pool, self.name, self.timeouts.idle)
        status = response.status
        if status // 100 != 2:
            error = await self._error(exchange, until)
            outcome = Outcome.FAILED if status >= 500 else Outcome.NEUTRAL
            if status < 500 and status not in RETRYABLE_STATUS:
                outcome = Outcome.OK
            await exchange.finish(outcome)
            raise error
        return exchange

    async def _send(
        self,
        session: aiohttp.ClientSession,
        endpoint: Endpoint,
        url: str,
        body: bytes,
        headers: dict[str, str],
        until: float,
    ) -> aiohttp.ClientResponse:
        outcome = Outcome.FAILED
        try:
            proxy, proxy_auth = proxy_for(endpoint.url)
            async with asyncio.timeout_at(until):
                response = await session.post(
                    url,
                    data=body,
                    headers=headers,
                    timeout=self._timeout,
                    proxy=proxy,
                    proxy_auth=proxy_auth,
                )
            outcome = Outcome.OK
            return response
        except TimeoutError as exc:  # aiohttp's timeouts are TimeoutErrors too
            raise timed_out(f"The upstream of '{self.name}' did not answer in time.") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailable(
                f"The upstream of '{self.name}' could not be reached ({type(exc).__name__})."
            ) from exc
        except BaseException:
            outcome = Outcome.NEUTRAL
            raise
        finally:
            if outcome is not Outcome.OK:
                self.pool.release(endpoint, outcome)

    async def _error(self, exchange: Exchange, until: float) -> PortwayError:
        """The error a non-2xx upstream response becomes."""
        status = exchange.response.status
        try:
            body = await exchange.read_all(until, MAX_ERROR_BODY)
        except PortwayError:
            body = b""
        error = _envelope(body)
        message = self.credentials.scrub(_text(error.get("message")) or "")
        retry_after = retry_after_seconds(exchange.response.headers)
        if status in MISCONFIGURED_STATUS:
            return UpstreamUnavailable(
                f"The upstream of '{self.name}' {MISCONFIGURED_STATUS[status]} (HTTP {status})."
            ).no_retry()
        if 400 <= status < 500:
            return UpstreamRejected(
                status,
                message or f"The upstream of '{self.name}' refused the request (HTTP {status}).",
                type=_text(error.get("type")),
                param=_text(error.get("param")),
                code=_text(error.get("code")),
                retry_after=retry_after,
            )
        detail = f": {message[:300]}" if message else ""
        failed = UpstreamUnavailable(
            f"The upstream of '{self.name}' failed (HTTP {status}){detail}"
        )
        failed.retry_after = retry_after
        return failed


class UpstreamChat(UpstreamBackend):
    kind: ClassVar[Kind] = "chat"


class UpstreamEmbedding(UpstreamBackend):
    kind: ClassVar[Kind] = "embedding"


class UpstreamImage(UpstreamBackend):
    kind: ClassVar[Kind] = "image"


KINDS: dict[str, type[UpstreamBackend]] = {
    "chat": UpstreamChat,
    "embedding": UpstreamEmbedding,
    "image": UpstreamImage,
}


def upstream_backend(spec: OpenAISpec) -> UpstreamBackend:
    """The backend for ``spec``, of the kind the catalogue declares."""
    return KINDS[spec.kind](spec)
