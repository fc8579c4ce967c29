"""The 429s of limits, in OpenAI's shapes: over a rate, ``rate_limit_exceeded``
of type ``requests`` or ``tokens``; over a budget, ``insufficient_quota``."""

from __future__ import annotations

from portway.errors import PortwayError


class RateLimited(PortwayError):
    """Over requests or tokens per minute, or concurrent requests: retry later."""

    status = 429
    type = "requests"
    code = "rate_limit_exceeded"

    def __init__(self, kind: str, message: str, headers: dict[str, str]) -> None:
        super().__init__(message, headers=headers)
        self.type = kind


class QuotaExceeded(PortwayError):
    """Over a daily or monthly token budget: nothing more until the period ends.

    It says ``x-should-retry: false``: the openai clients retry every 429 unless
    told not to, and a spent budget does not come back within their retries.
    """

    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"

    def __init__(self, message: str, headers: dict[str, str]) -> None:
        super().__init__(message, headers={**headers, "x-should-retry": "false"})
