"""Limits enforced in this process's memory: the one-process server's enforcer.

The same algorithm as :mod:`portway.limits.lua` (a sliding log per window), in
Python; every method runs without awaiting, so an admission is atomic in the
event loop.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from portway.limits.model import (
    WINDOW_MS,
    Admission,
    Check,
    Outcome,
    Usage,
    Verdict,
)

HELD_MS = 15 * 60_000
"""How long a slot is held if nothing frees it. Slots here live and die with the
process that holds them, so they need no renewal; this only bounds a slot a bug
left behind."""


@dataclass
class _Windows:
    requests: deque[int] = field(default_factory=deque)
    """Admission times, oldest first."""
    tokens: OrderedDict[str, list[int]] = field(default_factory=OrderedDict)
    """Request id -> [admission time, tokens], oldest first."""
    token_sum: int = 0
    in_flight: dict[str, int] = field(default_factory=dict)
    """Request id -> when its slot lapses."""

    def expire(self, now: int) -> None:
        edge = now - WINDOW_MS
        while self.requests and self.requests[0] <= edge:
            self.requests.popleft()
        while self.tokens:
            rid, (when, count) = next(iter(self.tokens.items()))
            if when > edge:
                break
            del self.tokens[rid]
            self.token_sum -= count
        for rid in [rid for rid, until in self.in_flight.items() if until <= now]:
            del self.in_flight[rid]

    def usage(self, now: int) -> Usage:
        newest = next(reversed(self.tokens.values()))[0] if self.tokens else None
        return Usage(
            requests=len(self.requests),
            requests_reset_ms=self.requests[-1] + WINDOW_MS - now if self.requests else 0,
            tokens=self.token_sum,
            tokens_reset_ms=newest + WINDOW_MS - now if newest is not None else 0,
            concurrent=len(self.in_flight),
        )

    def tokens_retry_ms(self, now: int, limit: int, estimate: int) -> int:
        """Until enough tokens leave the window for ``estimate`` more."""
        left = self.token_sum
        for when, count in self.tokens.values():
            left -= count
            if left + estimate <= limit:
                return when + WINDOW_MS - now
        return WINDOW_MS


class MemoryEnforcer:
    """Sliding windows, concurrency slots and budgets, in a dict."""

    def __init__(self) -> None:
        self._windows: dict[str, _Windows] = {}
        self._budgets: dict[str, int] = {}

    def _of(self, key: str) -> _Windows:
        found = self._windows.get(key)
        if found is None:
            found = self._windows[key] = _Windows()
        return found

    async def admit(self, admission: Admission) -> Outcome:
        now = admission.now_ms
        windows = [self._of(check.key) for check in admission.checks]
        for index, check in enumerate(admission.checks):
            windows[index].expire(now)
            self._seed(admission, index, check)
        for index, check in enumerate(admission.checks):
            verdict, retry = self._judge(admission, check, windows[index])
            if verdict is not Verdict.ADMITTED:
                usage = tuple(found.usage(now) for found in windows)
                return Outcome(verdict, index, retry, usage)
        for found in windows:
            found.requests.append(now)
            found.tokens[admission.request_id] = [now, admission.estimate]
            found.token_sum += admission.estimate
            found.in_flight[admission.request_id] = now + HELD_MS
        return Outcome(Verdict.ADMITTED, 0, 0, tuple(found.usage(now) for found in windows))

    def _seed(self, admission: Admission, index: int, check: Check) -> None:
        if index >= len(admission.seeds):
            return
        for name, seed in zip(_budget_keys(admission, check), admission.seeds[index], strict=True):
            if seed is not None:
                self._budgets.setdefault(name, seed)

    def _judge(self, admission: Admission, check: Check, found: _Windows) -> tuple[Verdict, int]:
        limits, now, periods = check.limits, admission.now_ms, admission.periods
        day, month = _budget_keys(admission, check)
        if limits.tokens_per_day is not None and self._budgets.get(day, 0) >= limits.tokens_per_day:
            return Verdict.DAILY_BUDGET, periods.day_ends_ms - now
        spent = self._budgets.get(month, 0)
        if limits.tokens_per_month is not None and spent >= limits.tokens_per_month:
            return Verdict.MONTHLY_BUDGET, periods.month_ends_ms - now
        if limits.concurrent is not None and len(found.in_flight) >= limits.concurrent:
            return Verdict.CONCURRENT, 1000
        if limits.rpm is not None and len(found.requests) >= limits.rpm:
            oldest = found.requests[0] if found.requests else now
            return Verdict.REQUESTS, oldest + WINDOW_MS - now
        if limits.tpm is not None and admission.estimate > limits.tpm:
            return Verdict.TOO_LARGE, found.usage(now).tokens_reset_ms
        if limits.tpm is not None and found.token_sum + admission.estimate > limits.tpm:
            return Verdict.TOKENS, found.tokens_retry_ms(now, limits.tpm, admission.estimate)
        return Verdict.ADMITTED, 0

    async def settle(self, admission: Admission, tokens: int, *, first: bool) -> None:
        """Count ``tokens`` the request used: its first settlement replaces its
        estimate in the window and frees its slot; a later one adds to it."""
        for check in admission.checks:
            found = self._of(check.key)
            if first:
                found.in_flight.pop(admission.request_id, None)
            entry = found.tokens.get(admission.request_id)
            if entry is not None:
                new = tokens if first else entry[1] + tokens
                found.token_sum += new - entry[1]
                entry[1] = new
            day, month = _budget_keys(admission, check)
            if check.limits.tokens_per_day is not None:
                self._budgets[day] = self._budgets.get(day, 0) + tokens
            if check.limits.tokens_per_month is not None:
                self._budgets[month] = self._budgets.get(month, 0) + tokens

    async def renew(self, admissions: Sequence[Admission], now_ms: int) -> None:
        """Nothing to renew: these slots die with their process."""

    async def close(self) -> None:
        return None


def _budget_keys(admission: Admission, check: Check) -> tuple[str, str]:
    periods = admission.periods
    return f"{check.key}:d:{periods.day}", f"{check.key}:m:{periods.month}"
