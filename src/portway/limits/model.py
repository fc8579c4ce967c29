"""What limits are, and what one admission under them looks like.

A principal's request is checked against its token's limits and its user's (each
a :class:`Check`); both must pass. Windows are sliding: a request counts against
requests per minute for the 60 seconds after it was admitted, its tokens against
tokens per minute likewise (its estimate at first, what it used once it ends).
Budgets count the tokens requests used in their UTC day and month.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import IntEnum

WINDOW_MS = 60_000
"""The sliding window of requests and tokens per minute."""
LEASE_MS = 60_000
"""How long a concurrency slot in Redis is held past its admission or last renewal:
a process that dies stops renewing, and its slots free within this."""
RENEW_SECONDS = 20.0
"""How often a process renews the slots of its requests in flight (a third of
the lease: one missed renewal loses nothing)."""


@dataclass(frozen=True)
class Limits:
    """One subject's limits; None is unlimited."""

    rpm: int | None = None
    tpm: int | None = None
    concurrent: int | None = None
    tokens_per_day: int | None = None
    tokens_per_month: int | None = None

    def any(self) -> bool:
        """Whether anything is limited."""
        return any(getattr(self, name) is not None for name in LIMIT_FIELDS)


LIMIT_FIELDS: tuple[str, ...] = tuple(item.name for item in fields(Limits))


@dataclass(frozen=True)
class Check:
    """A subject (``user:ID`` or ``token:ID``) and its limits."""

    key: str
    limits: Limits


class Verdict(IntEnum):
    """How an admission went: admitted, or the first limit that refused it."""

    ADMITTED = 0
    DAILY_BUDGET = 1
    MONTHLY_BUDGET = 2
    CONCURRENT = 3
    REQUESTS = 4
    TOKENS = 5
    TOO_LARGE = 6
    """The request's own estimate is over the tokens per minute."""


@dataclass(frozen=True)
class Usage:
    """One subject's windows as an admission left them (or found them, if refused)."""

    requests: int = 0
    requests_reset_ms: int = 0
    """Until every request in the window has left it."""
    tokens: int = 0
    tokens_reset_ms: int = 0
    concurrent: int = 0


@dataclass(frozen=True)
class Outcome:
    """An enforcer's answer: the verdict, which check it concerns, when to retry,
    and each check's :class:`Usage`."""

    verdict: Verdict
    index: int = 0
    retry_ms: int = 0
    usage: tuple[Usage, ...] = ()


@dataclass(frozen=True)
class Periods:
    """The UTC day and month an admission counts its tokens in."""

    day: str
    month: str
    day_ends_ms: int
    month_ends_ms: int

    @classmethod
    def at(cls, now_ms: int) -> Periods:
        now = datetime.fromtimestamp(now_ms / 1000, UTC)
        day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        month_start = day_start.replace(day=1)
        next_month = month_start.replace(
            year=month_start.year + month_start.month // 12, month=month_start.month % 12 + 1
        )
        return cls(
            day=day_start.date().isoformat(),
            month=month_start.strftime("%Y-%m"),
            day_ends_ms=int(day_start.timestamp() * 1000) + 86_400_000,
            month_ends_ms=int(next_month.timestamp() * 1000),
        )

    @property
    def day_start(self) -> datetime:
        return datetime.fromtimestamp((self.day_ends_ms - 86_400_000) / 1000, UTC)

    @property
    def month_start(self) -> datetime:
        return datetime.fromisoformat(self.month + "-01T00:00:00+00:00")


@dataclass(frozen=True)
class Admission:
    """What an enforcer is asked to admit."""

    request_id: str
    checks: tuple[Check, ...]
    estimate: int
    now_ms: int
    periods: Periods
    seeds: tuple[tuple[int | None, int | None], ...] = ()
    """Per check, the day's and month's tokens the ledger holds, for a budget
    counter not yet started (None: not known here)."""


@dataclass
class Ticket:
    """An admitted request: what it holds, until :meth:`Limiter.finish`."""

    admission: Admission
    outcome: Outcome
    used: int = 0
    """Tokens its ledger rows counted (prompt and completion)."""
    recorded: bool = False
    finished: bool = False
    headers: dict[str, str] = field(default_factory=dict)
