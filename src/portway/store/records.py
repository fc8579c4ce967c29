"""Plain, immutable records returned by :class:`portway.store.Store`.

These are the only shapes that leave the storage layer: no SQLAlchemy rows,
sessions or types escape it. Every ``datetime`` is timezone-aware UTC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

USAGE_STATUSES: tuple[str, ...] = ("completed", "failed", "cancelled")
"""The values a :attr:`UsageRecord.status` may take."""

ANONYMOUS_USER = "(anonymous)"
"""The :attr:`UsageSummary.user` label for usage recorded without a user."""

MAX_TOKENS = 2**40
"""The most tokens one usage record counts (prompt or completion): far beyond any
real request, and low enough that sums over millions of rows fit in 64 bits."""

MAX_TEXT = 200
"""The longest ``request_id``, ``endpoint``, ``model``, ``version_id`` and
``error_code`` a usage record keeps (characters)."""

MAX_END_USER = 256
"""The longest ``end_user`` a usage record keeps: what the API accepts in ``user``."""


def printable(value: str) -> str:
    """``value`` as every database stores it: NUL as U+FFFD, lone surrogates as ``?``."""
    return value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


@dataclass(frozen=True)
class User:
    """A Portway account."""

    id: int
    name: str
    is_admin: bool
    created_at: datetime


@dataclass(frozen=True)
class TokenInfo:
    """An API token's metadata. The secret itself is never stored, only its hash."""

    id: str
    user: User
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last4: str
    token_hash: bytes = field(default=b"", repr=False)
    """The stored SHA-256 of the secret, for a constant-time comparison."""
    name: str = ""
    """What its owner called it when creating it (may be empty)."""


@dataclass(frozen=True)
class UsageRecord:
    """One served (or failed, or cancelled) request, for accounting."""

    request_id: str
    user_id: int | None
    token_id: str | None
    endpoint: str
    model: str
    version_id: str | None
    prompt_tokens: int
    completion_tokens: int
    status: str  # one of USAGE_STATUSES
    error_code: str | None
    end_user: str | None
    latency_ms: int
    started_at: datetime
    ended_at: datetime
    entry_id: str | None = None
    """A unique id given when the row is queued: a row written twice (replayed
    after a crash) is stored once. None for rows from before it existed."""


@dataclass(frozen=True)
class RejectedUsage:
    """A usage record the database refused, set aside for an admin to see."""

    id: int
    request_id: str
    record: dict[str, Any]
    """The record's fields as JSON (datetimes as ISO 8601 text)."""
    reason: str
    rejected_at: datetime


@dataclass(frozen=True)
class UsageSummary:
    """Usage totals for one (user, model) pair."""

    user: str
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class DailyUsage:
    """Usage totals for one (UTC day, user, model)."""

    day: str
    """``YYYY-MM-DD``, UTC."""
    user: str
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int


RESPONSE_STATUSES: tuple[str, ...] = (
    "completed",
    "failed",
    "cancelled",
    "incomplete",
    "in_progress",
)
"""The values a :attr:`StoredResponse.status` may take."""


@dataclass(frozen=True)
class StoredResponse:
    """One response of the Responses API, as its owner may read it back.

    ``input_items`` and ``output_items`` are OpenAI item objects (plain JSON, each
    with its ``id``); ``body`` is the whole response object as last sent.
    """

    id: str
    user_id: int
    previous_response_id: str | None
    model: str
    status: str  # one of RESPONSE_STATUSES
    created_at: datetime
    input_items: tuple[dict[str, Any], ...]
    output_items: tuple[dict[str, Any], ...]
    body: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class ItemPage:
    """One page of a response's input items."""

    items: tuple[dict[str, Any], ...]
    has_more: bool


@dataclass(frozen=True)
class SecretInfo:
    """A stored secret's name and dates; its value never leaves the store unasked."""

    name: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class RunnerModel:
    """A model a runner has served: known across restarts, attached or not."""

    model: str
    kind: str
    visibility: str
