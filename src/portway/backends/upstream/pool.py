"""The replicas (endpoints) of one upstream model: which one takes the next
request, and which ones are out for a cool-down.

An attempt takes the available endpoint with the fewest requests in flight (ties
go round-robin) and gives it back with its outcome. An endpoint that fails
``eject_after`` attempts in a row is ejected for ``eject_seconds``; after that it
is offered again ("probing"): one success makes it healthy, one failure ejects it
again. When every endpoint is ejected the pool refuses at once, so a dead upstream
costs no timeouts and the model's fallbacks take over without waiting.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger("portway.upstream")


class Outcome(Enum):
    """How an attempt on an endpoint ended, as far as the endpoint's health goes."""

    OK = "ok"  # answered as its API promises (request errors such as a 400 included)
    FAILED = "failed"  # no answer, a 5xx, a timeout, garbage, a broken stream
    NEUTRAL = "neutral"  # says nothing of its health: the client left, a 429


def display_url(url: str) -> str:
    """``url`` without user info, query or fragment: safe to log and to show."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass
class Endpoint:
    """One replica and its counters."""

    url: str
    in_flight: int = 0
    consecutive_failures: int = 0
    ejected_until: float = 0.0
    requests: int = 0
    failures: int = 0
    ejections: int = 0


class NoEndpointAvailable(Exception):
    """Every endpoint of the pool is ejected; ``retry_in`` is when one returns."""

    def __init__(self, retry_in: float) -> None:
        super().__init__(f"every upstream endpoint is ejected for another {retry_in:.1f}s")
        self.retry_in = retry_in


class EndpointPool:
    def __init__(
        self,
        urls: tuple[str, ...],
        *,
        eject_after: int,
        eject_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not urls:
            raise ValueError("an endpoint pool needs at least one URL")
        self.endpoints = [Endpoint(url) for url in urls]
        self.eject_after = eject_after
        self.eject_seconds = eject_seconds
        self._clock = clock
        self._turn = 0

    def acquire(self) -> Endpoint:
        """The available endpoint with the fewest in flight, now counted in flight."""
        now = self._clock()
        count = len(self.endpoints)
        best: Endpoint | None = None
        for offset in range(count):
            endpoint = self.endpoints[(self._turn + offset) % count]
            if endpoint.ejected_until > now:
                continue
            if best is None or endpoint.in_flight < best.in_flight:
                best = endpoint
        if best is None:
            soonest = min(endpoint.ejected_until for endpoint in self.endpoints)
            raise NoEndpointAvailable(soonest - now)
        self._turn = (self._turn + 1) % count
        best.in_flight += 1
        best.requests += 1
        return best

    def release(self, endpoint: Endpoint, outcome: Outcome) -> None:
        """Give ``endpoint`` back after one attempt that ended with ``outcome``."""
        endpoint.in_flight -= 1
        if outcome is Outcome.OK:
            endpoint.consecutive_failures = 0
        elif outcome is Outcome.FAILED:
            endpoint.failures += 1
            endpoint.consecutive_failures += 1
            if endpoint.consecutive_failures >= self.eject_after:
                endpoint.ejected_until = self._clock() + self.eject_seconds
                endpoint.ejections += 1
                log.warning(
                    "upstream endpoint %s ejected for %.0fs after %d failures in a row",
                    display_url(endpoint.url),
                    self.eject_seconds,
                    endpoint.consecutive_failures,
                )

    def state(self, endpoint: Endpoint) -> str:
        """``healthy``, ``ejected`` (cooling down) or ``probing`` (back on trial)."""
        if endpoint.ejected_until > self._clock():
            return "ejected"
        if endpoint.consecutive_failures >= self.eject_after:
            return "probing"
        return "healthy"

    def health(self) -> list[dict[str, Any]]:
        """Each endpoint's state and counters (no credentials: URLs are shown bare)."""
        now = self._clock()
        return [
            {
                "url": display_url(endpoint.url),
                "state": self.state(endpoint),
                "in_flight": endpoint.in_flight,
                "consecutive_failures": endpoint.consecutive_failures,
                "requests": endpoint.requests,
                "failures": endpoint.failures,
                "ejected_for_seconds": round(max(0.0, endpoint.ejected_until - now), 1),
            }
            for endpoint in self.endpoints
        ]
