"""The errors of the upstream leg, which say whether trying again (or a
fallback model) may help::

    UpstreamFailure (mixin: retryable, fallback, retry_after)
    ├── UpstreamUnavailable  502  no connection, 5xx, garbage, broken body, 401/403/404
    ├── UpstreamTimedOut     504  connect, first byte, idle gap or total deadline passed
    └── UpstreamRejected     4xx  the upstream's own status, message, type, param, code

and what an upstream error body and the API key come to (``Credentials`` scrubs
the key from upstream messages that echo it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from portway.errors import BadGateway, GatewayTimeout, PortwayError

RETRYABLE_STATUS = frozenset({408, 409, 429})


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


def envelope(body: bytes) -> dict[str, Any]:
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


def short_text(value: object) -> str | None:
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
