"""Each enforcer (memory, Redis) on a fake clock: the same answers, step for step."""

from __future__ import annotations

import asyncio
import itertools

from portway.limits.limiter import Enforcer
from portway.limits.model import WINDOW_MS, Admission, Check, Limits, Periods, Verdict

START = 1_780_000_000_000  # ms; 2026-05-28, mid-day UTC
ids = itertools.count()


def ask(
    *checks: Check,
    at: int = START,
    estimate: int = 1,
    seeds: tuple[tuple[int | None, int | None], ...] = (),
) -> Admission:
    return Admission(f"req{next(ids)}", checks, estimate, at, Periods.at(at), seeds)


def token(**limits: int) -> Check:
    return Check("token:tok_a", Limits(**limits))


def user(**limits: int) -> Check:
    return Check("user:1", Limits(**limits))


async def test_requests_per_minute_slide(enforcer: Enforcer) -> None:
    for step in range(3):
        outcome = await enforcer.admit(ask(token(rpm=3), at=START + step * 1000))
        assert outcome.verdict is Verdict.ADMITTED
        assert outcome.usage[0].requests == step + 1
    refused = await enforcer.admit(ask(token(rpm=3), at=START + 5000))
    assert refused.verdict is Verdict.REQUESTS
    assert refused.retry_ms == WINDOW_MS - 5000  # until the first leaves the window
    assert refused.usage[0].requests_reset_ms == WINDOW_MS - 3000
    again = await enforcer.admit(ask(token(rpm=3), at=START + WINDOW_MS))
    assert again.verdict is Verdict.ADMITTED
    assert again.usage[0].requests == 3


async def test_tokens_per_minute_count_the_estimate_until_settled(enforcer: Enforcer) -> None:
    first = ask(token(tpm=100), estimate=60)
    assert (await enforcer.admit(first)).verdict is Verdict.ADMITTED
    second = await enforcer.admit(ask(token(tpm=100), at=START + 10, estimate=60))
    assert second.verdict is Verdict.TOKENS
    assert second.retry_ms == WINDOW_MS - 10
    assert second.usage[0].tokens == 60
    await enforcer.settle(first, 10, first=True)
    third = await enforcer.admit(ask(token(tpm=100), at=START + 20, estimate=60))
    assert third.verdict is Verdict.ADMITTED
    assert third.usage[0].tokens == 70


async def test_a_request_larger_than_the_minute_is_refused(enforcer: Enforcer) -> None:
    outcome = await enforcer.admit(ask(token(tpm=100), estimate=101))
    assert outcome.verdict is Verdict.TOO_LARGE


async def test_concurrent_slots_are_freed_by_the_first_settlement(enforcer: Enforcer) -> None:
    held = [ask(token(concurrent=2)) for _ in range(2)]
    for admission in held:
        assert (await enforcer.admit(admission)).verdict is Verdict.ADMITTED
    refused = await enforcer.admit(ask(token(concurrent=2)))
    assert (refused.verdict, refused.retry_ms) == (Verdict.CONCURRENT, 1000)
    await enforcer.settle(held[0], 5, first=True)
    assert (await enforcer.admit(ask(token(concurrent=2)))).verdict is Verdict.ADMITTED


async def test_daily_budget_refuses_the_next_request_not_the_one_over(enforcer: Enforcer) -> None:
    first = ask(token(tokens_per_day=100))
    assert (await enforcer.admit(first)).verdict is Verdict.ADMITTED
    await enforcer.settle(first, 150, first=True)
    refused = await enforcer.admit(ask(token(tokens_per_day=100), at=START + 1))
    periods = Periods.at(START)
    assert refused.verdict is Verdict.DAILY_BUDGET
    assert refused.retry_ms == periods.day_ends_ms - START - 1
    tomorrow = await enforcer.admit(ask(token(tokens_per_day=100), at=periods.day_ends_ms))
    assert tomorrow.verdict is Verdict.ADMITTED


async def test_monthly_budget_starts_from_its_seed(enforcer: Enforcer) -> None:
    seeded = ask(token(tokens_per_month=500), seeds=((None, 500),))
    outcome = await enforcer.admit(seeded)
    assert outcome.verdict is Verdict.MONTHLY_BUDGET
    # a seed only starts a counter: it never overwrites one
    again = await enforcer.admit(ask(token(tokens_per_month=500), seeds=((None, 0),)))
    assert again.verdict is Verdict.MONTHLY_BUDGET


async def test_late_usage_adds_to_the_budget(enforcer: Enforcer) -> None:
    first = ask(token(tokens_per_day=100))
    await enforcer.admit(first)
    await enforcer.settle(first, 60, first=True)
    assert (await enforcer.admit(ask(token(tokens_per_day=100)))).verdict is Verdict.ADMITTED
    await enforcer.settle(first, 40, first=False)
    refused = await enforcer.admit(ask(token(tokens_per_day=100)))
    assert refused.verdict is Verdict.DAILY_BUDGET


async def test_one_refusing_check_admits_nothing_on_the_other(enforcer: Enforcer) -> None:
    assert (await enforcer.admit(ask(user(rpm=1)))).verdict is Verdict.ADMITTED
    refused = await enforcer.admit(ask(token(rpm=5), user(rpm=1)))
    assert (refused.verdict, refused.index) == (Verdict.REQUESTS, 1)
    assert refused.usage[0].requests == 0  # the token's window took nothing
    alone = await enforcer.admit(ask(token(rpm=5)))
    assert alone.usage[0].requests == 1


async def test_concurrent_admissions_never_over_admit(enforcer: Enforcer) -> None:
    outcomes = await asyncio.gather(*(enforcer.admit(ask(token(rpm=30))) for _ in range(100)))
    verdicts = [outcome.verdict for outcome in outcomes]
    assert verdicts.count(Verdict.ADMITTED) == 30
    assert verdicts.count(Verdict.REQUESTS) == 70
