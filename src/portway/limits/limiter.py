"""The limiter: a principal's limits, read from the store (trusted for 2 seconds,
like tokens), checked by an enforcer (in memory, or Redis across processes), and
each admitted request settled with the tokens its ledger rows counted. While
requests are in flight, a task renews their concurrency slots every
``RENEW_SECONDS`` (one enforcer call for all of them), so that a slot outlives
its short lease only while its process lives."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from portway.auth.principal import Principal
from portway.cluster import Cluster, SharedCluster
from portway.errors import PortwayError
from portway.limits.errors import QuotaExceeded, RateLimited
from portway.limits.headers import duration, rate_headers, retry_after
from portway.limits.model import (
    RENEW_SECONDS,
    Admission,
    Check,
    Limits,
    Outcome,
    Periods,
    Ticket,
    Verdict,
)
from portway.store import Store
from portway.store.limits import LIMIT_COLUMNS, LimitRow

log = logging.getLogger("portway.limits")

CACHE_SECONDS = 2.0
"""How long a principal's limits are trusted: a change shows within it everywhere."""


class Enforcer(Protocol):
    async def admit(self, admission: Admission) -> Outcome: ...

    async def settle(self, admission: Admission, tokens: int, *, first: bool) -> None: ...

    async def renew(self, admissions: Sequence[Admission], now_ms: int) -> None: ...

    async def close(self) -> None: ...


def _limits(row: LimitRow | None) -> Limits:
    if row is None:
        return Limits()
    return Limits(**{name: getattr(row, name) for name in LIMIT_COLUMNS})


class Limiter:
    def __init__(
        self,
        store: Store,
        enforcer: Enforcer,
        *,
        clock: Callable[[], float] = time.time,
        cache_seconds: float = CACHE_SECONDS,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._store = store
        self._enforcer = enforcer
        self._clock = clock
        self._sleep = sleep
        self._cache_seconds = cache_seconds
        self._cache: dict[tuple[int, str], tuple[float, tuple[Check, ...]]] = {}
        self._seeded: set[str] = set()
        self._late: set[asyncio.Task[None]] = set()
        self._live: dict[str, Ticket] = {}
        """Admitted and not finished, by request id: the slots to renew."""
        self._renewer: asyncio.Task[None] | None = None

    async def checks(self, who: Principal) -> tuple[Check, ...]:
        """The token's and its user's limits that limit anything (cached)."""
        key = (who.user.id, who.token_id)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and now - cached[0] < self._cache_seconds:
            return cached[1]
        user_row, token_row = await self._store.limits_for(who.user.id, who.token_id)
        found = tuple(
            Check(name, limits)
            for name, limits in (
                (f"token:{who.token_id}", _limits(token_row)),
                (f"user:{who.user.id}", _limits(user_row)),
            )
            if limits.any()
        )
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (now, found)
        return found

    async def admit(self, who: Principal, request_id: str, estimate: int) -> Ticket | None:
        """Admit one request counted as ``estimate`` tokens, or raise the 429 of
        the first limit it is over. None: the principal has no limits."""
        checks = await self.checks(who)
        if not checks:
            return None
        now_ms = int(self._clock() * 1000)
        periods = Periods.at(now_ms)
        seeds = tuple([await self._seeds(check, periods) for check in checks])
        admission = Admission(request_id, checks, estimate, now_ms, periods, seeds)
        outcome = await self._enforcer.admit(admission)
        headers = rate_headers(checks, outcome.usage)
        if outcome.verdict is not Verdict.ADMITTED:
            raise refusal(admission, outcome, headers)
        ticket = Ticket(admission, outcome, headers=headers)
        self._hold(ticket)
        return ticket

    def _hold(self, ticket: Ticket) -> None:
        """Renew ``ticket``'s slots until it is finished."""
        self._live[ticket.admission.request_id] = ticket
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_while_held())

    async def _renew_while_held(self) -> None:
        while self._live:
            await self._sleep(RENEW_SECONDS)
            await self.renew()

    async def renew(self) -> None:
        """Hold every in-flight request's slots for another lease: one enforcer call."""
        if not self._live:
            return
        admissions = [ticket.admission for ticket in self._live.values()]
        try:
            await self._enforcer.renew(admissions, int(self._clock() * 1000))
        except PortwayError as exc:
            log.warning("limits: %d slots not renewed: %s", len(admissions), exc)

    async def _seeds(self, check: Check, periods: Periods) -> tuple[int | None, int | None]:
        """The ledger's tokens of this day and month, the first time this process
        counts a budget of ``check`` in them (a counter not yet kept starts there)."""
        kind, _, ident = check.key.partition(":")
        subject = {"user_id": int(ident)} if kind == "user" else {"token_id": ident}
        found: list[int | None] = []
        for limit, period, since in (
            (check.limits.tokens_per_day, periods.day, periods.day_start),
            (check.limits.tokens_per_month, periods.month, periods.month_start),
        ):
            memo = f"{check.key}:{period}"
            if limit is None or memo in self._seeded:
                found.append(None)
                continue
            found.append(await self._store.tokens_used_since(since, **subject))
            self._seeded.add(memo)
        return found[0], found[1]

    def record(self, ticket: Ticket, tokens: int) -> None:
        """A ledger row of ``ticket``'s request counted ``tokens`` (the hook in
        :mod:`portway.serving.metering`). After :meth:`finish`, they are added late."""
        if not ticket.finished:
            ticket.used += tokens
            ticket.recorded = True
            return
        task = asyncio.create_task(self._settle(ticket, tokens, first=False))
        self._late.add(task)
        task.add_done_callback(self._late.discard)

    async def finish(self, ticket: Ticket) -> None:
        """Free the request's concurrency slot and count what it used."""
        if ticket.finished:
            return
        ticket.finished = True
        self._live.pop(ticket.admission.request_id, None)
        await self._settle(ticket, ticket.used, first=True)

    async def _settle(self, ticket: Ticket, tokens: int, *, first: bool) -> None:
        try:
            await self._enforcer.settle(ticket.admission, tokens, first=first)
        except PortwayError as exc:
            log.warning("limits: request %s not settled: %s", ticket.admission.request_id, exc)

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
        if self._late:
            await asyncio.gather(*self._late, return_exceptions=True)
        await self._enforcer.close()


_WHAT = {
    Verdict.CONCURRENT: ("requests", "concurrent requests", "concurrent"),
    Verdict.REQUESTS: ("requests", "requests per minute (RPM)", "rpm"),
    Verdict.TOKENS: ("tokens", "tokens per minute (TPM)", "tpm"),
    Verdict.TOO_LARGE: ("tokens", "tokens per minute (TPM)", "tpm"),
}


def refusal(admission: Admission, outcome: Outcome, headers: dict[str, str]) -> PortwayError:
    """The 429 of ``outcome``, with ``headers`` and ``retry-after``."""
    check = admission.checks[outcome.index]
    subject = check.key.replace(":", " ", 1)
    headers = {**headers, "retry-after": retry_after(outcome.retry_ms)}
    wait = duration(outcome.retry_ms)
    if outcome.verdict in (Verdict.DAILY_BUDGET, Verdict.MONTHLY_BUDGET):
        daily = outcome.verdict is Verdict.DAILY_BUDGET
        limit = check.limits.tokens_per_day if daily else check.limits.tokens_per_month
        period = "daily" if daily else "monthly"
        return QuotaExceeded(
            f"You exceeded the {period} token budget of {subject} ({limit} tokens). "
            f"It renews in {wait}.",
            headers,
        )
    kind, name, field = _WHAT[outcome.verdict]
    limit = getattr(check.limits, field)
    usage = outcome.usage[outcome.index]
    used = {"concurrent": usage.concurrent, "rpm": usage.requests, "tpm": usage.tokens}[field]
    requested = admission.estimate if kind == "tokens" else 1
    if outcome.verdict is Verdict.TOO_LARGE:
        message = (
            f"Request too large for {subject} on {name}: Limit {limit}, Requested "
            f"{requested}. Reduce the input or max_tokens to run it."
        )
    else:
        message = (
            f"Rate limit reached for {subject} on {name}: Limit {limit}, Used {used}, "
            f"Requested {requested}. Please try again in {wait}."
        )
    return RateLimited(kind, message, headers)


def enforcer_for(cluster: Cluster) -> Enforcer:
    """Counting in the cluster's Redis, on its connection and under its
    ``NAME:limits:`` keys, when other processes share it; else in this process's memory."""
    if not isinstance(cluster, SharedCluster):
        from portway.limits.memory import MemoryEnforcer

        return MemoryEnforcer()
    from portway.limits.shared import RedisEnforcer

    return RedisEnforcer(cluster.redis, cluster.key("limits") + ":")
