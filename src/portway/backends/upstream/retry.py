"""When to try an upstream again: exponential backoff with jitter, ``Retry-After``,
and the request's deadline."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from portway.backends.upstream.spec import UpstreamRetries


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    backoff_base: float = 0.5
    backoff_cap: float = 8.0
    jitter: bool = True

    @classmethod
    def of(cls, spec: UpstreamRetries) -> RetryPolicy:
        return cls(spec.max_attempts, spec.backoff_base, spec.backoff_cap, spec.jitter)

    def backoff(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before attempt ``attempt + 1``, after ``attempt`` (from 1)
        failed: ``min(cap, base * 2**(attempt-1))``, scaled into [0.5, 1) by jitter."""
        delay: float = min(self.backoff_cap, self.backoff_base * 2.0 ** (attempt - 1))
        return delay * (0.5 + rand() / 2) if self.jitter else delay

    def wait_before(
        self, attempt: int, retry_after: float | None, remaining: float
    ) -> float | None:
        """How long to wait before attempt ``attempt + 1``, or None when there is
        none: attempts are used up, or the wait (at least ``retry_after``) would
        not leave any of the ``remaining`` seconds of the deadline."""
        if attempt >= self.max_attempts:
            return None
        wait = max(self.backoff(attempt), retry_after or 0.0)
        return wait if wait < remaining else None


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """What the upstream asked for: ``retry-after-ms``, or ``retry-after`` as
    seconds or an HTTP date. None when absent or unreadable."""
    lowered = {key.lower(): value for key, value in headers.items()}
    try:
        if "retry-after-ms" in lowered:
            return max(0.0, float(lowered["retry-after-ms"]) / 1000)
        if "retry-after" in lowered:
            return max(0.0, float(lowered["retry-after"]))
    except ValueError:
        pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
