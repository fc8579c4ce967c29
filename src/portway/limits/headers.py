"""OpenAI's rate limit headers: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``,
resets written like ``1s``, ``120ms`` or ``6m0s``, and ``retry-after`` in seconds."""

from __future__ import annotations

from collections.abc import Sequence

from portway.limits.model import Check, Usage


def duration(ms: int) -> str:
    """``ms`` the way OpenAI (and Go) write a duration: ``0s``, ``250ms``, ``1.5s``, ``6m0s``."""
    ms = max(0, int(ms))
    if ms < 1000:
        return f"{ms}ms" if ms else "0s"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    head = f"{hours}h" if hours else ""
    if hours or minutes:
        head += f"{minutes}m"
    return f"{head}{seconds}s"


def retry_after(ms: int) -> str:
    """Whole seconds, rounded up, at least one."""
    return str(max(1, -(-int(ms) // 1000)))


def rate_headers(checks: Sequence[Check], usage: Sequence[Usage]) -> dict[str, str]:
    """The headers for the tightest check of each kind (requests, tokens) that has one."""
    headers: dict[str, str] = {}
    requests = [
        (check.limits.rpm, found.requests, found.requests_reset_ms)
        for check, found in zip(checks, usage, strict=True)
        if check.limits.rpm is not None
    ]
    tokens = [
        (check.limits.tpm, found.tokens, found.tokens_reset_ms)
        for check, found in zip(checks, usage, strict=True)
        if check.limits.tpm is not None
    ]
    for kind, found in (("requests", requests), ("tokens", tokens)):
        if not found:
            continue
        limit, used, reset = min(found, key=lambda item: item[0] - item[1])
        headers[f"x-ratelimit-limit-{kind}"] = str(limit)
        headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, limit - used))
        headers[f"x-ratelimit-reset-{kind}"] = duration(reset)
    return headers
