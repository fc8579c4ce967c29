"""The ``openai`` backend: a model served by another OpenAI-compatible server.

It relays; it never generates. :meth:`UpstreamBackend.open` sends one request
body to one endpoint (replica) and returns the open response (``exchange.py``)
once its headers are in with a 2xx status; every other outcome is raised as one
of the upstream errors (``errors.py``), which say whether trying again (or a
fallback model) may help; :meth:`UpstreamBackend.retrying` is the one retry loop.

Upstream 401, 403 and 404 mean Portway's key or model name is wrong, not the
client's request: they become 502s that do not repeat the upstream's words (an
upstream 401 message may quote part of the key). The API key is never logged,
never put into an error, and scrubbed from upstream messages that echo it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import aiohttp

from portway import __version__
from portway.backends.base import Kind, RelayBackend
from portway.backends.upstream.errors import (
    RETRYABLE_STATUS,
    Credentials,
    UpstreamFailure,
    UpstreamRejected,
    UpstreamUnavailable,
    envelope,
    short_text,
    timed_out,
)
from portway.backends.upstream.exchange import Exchange
from portway.backends.upstream.http_client import open_session, proxy_for
from portway.backends.upstream.pool import (
    Endpoint,
    EndpointPool,
    NoEndpointAvailable,
    Outcome,
)
from portway.backends.upstream.retry import RetryPolicy, retry_after_seconds
from portway.errors import PortwayError

if TYPE_CHECKING:  # the catalogue imports this family's spec.py: no import back at run time
    from portway.registry.catalog import OpenAISpec

T = TypeVar("T")

MAX_ERROR_BODY = 64 * 1024
MISCONFIGURED_STATUS = {
    401: "refused Portway's API key",
    403: "refused Portway's access",
    404: "does not know the model or route Portway asked for",
}


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
        self.retries = 0
        """Attempts repeated after a failure, since the start."""
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
            self.retries += 1  # read by the metrics
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
        error = envelope(body)
        message = self.credentials.scrub(short_text(error.get("message")) or "")
        retry_after = retry_after_seconds(exchange.response.headers)
        if status in MISCONFIGURED_STATUS:
            return UpstreamUnavailable(
                f"The upstream of '{self.name}' {MISCONFIGURED_STATUS[status]} (HTTP {status})."
            ).no_retry()
        if 400 <= status < 500:
            return UpstreamRejected(
                status,
                message or f"The upstream of '{self.name}' refused the request (HTTP {status}).",
                type=short_text(error.get("type")),
                param=short_text(error.get("param")),
                code=short_text(error.get("code")),
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
