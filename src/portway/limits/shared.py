"""Limits enforced in Redis, exact across every process and host that shares it.

Each admission and each settlement is one Lua script (:mod:`portway.limits.lua`),
so concurrent requests on any number of processes are never over-admitted. Keys
live under ``prefix`` (the cluster's ``NAME:limits:``) and lapse on their own.
The Redis client is the caller's (the cluster's connection, one pool per
process): the enforcer never closes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from portway.errors import PortwayError
from portway.limits import lua
from portway.limits.model import (
    LEASE_MS,
    WINDOW_MS,
    Admission,
    Check,
    Outcome,
    Usage,
    Verdict,
)


class LimitsUnavailable(PortwayError):
    """Redis did not answer, so no request under limits can be admitted."""

    status = 503
    code = "limits_unavailable"

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"Rate limits cannot be checked now ({reason}); try again shortly.",
            headers={"Retry-After": "1"},
        )


def _none(value: int | None) -> int:
    return -1 if value is None else value


class RedisEnforcer:
    """The :class:`~portway.limits.memory.MemoryEnforcer` algorithm, in Redis."""

    def __init__(self, client: Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._admit = client.register_script(lua.ADMIT)
        self._settle = client.register_script(lua.SETTLE)
        self._renew = client.register_script(lua.RENEW)

    def _keys(self, admission: Admission, check: Check) -> list[str]:
        base = self._prefix + check.key
        periods = admission.periods
        return [
            f"{base}:r",
            f"{base}:t",
            f"{base}:tn",
            f"{base}:ts",
            f"{base}:c",
            f"{base}:d:{periods.day}",
            f"{base}:m:{periods.month}",
        ]

    async def admit(self, admission: Admission) -> Outcome:
        keys: list[str] = []
        args: list[Any] = [
            admission.now_ms,
            admission.request_id,
            admission.estimate,
            LEASE_MS,
            WINDOW_MS,
            admission.periods.day_ends_ms,
            admission.periods.month_ends_ms,
        ]
        for index, check in enumerate(admission.checks):
            keys += self._keys(admission, check)
            limits = check.limits
            seeds = admission.seeds[index] if index < len(admission.seeds) else (None, None)
            args += [
                _none(limits.rpm),
                _none(limits.tpm),
                _none(limits.concurrent),
                _none(limits.tokens_per_day),
                _none(limits.tokens_per_month),
                _none(seeds[0]),
                _none(seeds[1]),
            ]
        reply = await self._run(self._admit, keys, args)
        verdict, index, retry, *rest = (int(value) for value in reply)
        usage = tuple(Usage(*rest[at : at + 5]) for at in range(0, len(rest), 5))
        return Outcome(Verdict(verdict), index, retry, usage)

    async def settle(self, admission: Admission, tokens: int, *, first: bool) -> None:
        """See :meth:`MemoryEnforcer.settle`."""
        keys: list[str] = []
        args: list[Any] = [admission.request_id, tokens, "1" if first else "0"]
        for check in admission.checks:
            keys += self._keys(admission, check)
            args += [
                int(check.limits.tokens_per_day is not None),
                int(check.limits.tokens_per_month is not None),
            ]
        await self._run(self._settle, keys, args)

    async def renew(self, admissions: Sequence[Admission], now_ms: int) -> None:
        """Hold the concurrency slots of ``admissions`` (requests still in flight)
        for another lease from ``now_ms``, in one call; freed ones stay freed."""
        held: dict[str, list[str]] = {}
        for admission in admissions:
            for check in admission.checks:
                held.setdefault(self._keys(admission, check)[4], []).append(admission.request_id)
        if not held:
            return
        args: list[Any] = [now_ms + LEASE_MS, LEASE_MS]
        for ids in held.values():
            args += [len(ids), *ids]
        await self._run(self._renew, list(held), args)

    async def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise LimitsUnavailable(type(exc).__name__) from exc

    async def close(self) -> None:
        """Nothing to release: the client is the cluster's, closed with it."""
