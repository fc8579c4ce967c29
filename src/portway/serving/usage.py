"""The usage ledger writer: rows are queued without blocking and written in batches.

Every generation writes exactly one row, whether it completed, failed or was
cancelled. ``stop()`` writes whatever is still queued, so a graceful shutdown
loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from portway.store import Store, UsageRecord

log = logging.getLogger("portway.usage")


class UsageRecorder:
    def __init__(self, store: Store, flush_seconds: float = 0.5, batch: int = 500) -> None:
        self._store = store
        self._flush_seconds = flush_seconds
        self._batch = batch
        self._pending: list[UsageRecord] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def record(self, record: UsageRecord) -> None:
        self._pending.append(record)
        if len(self._pending) >= self._batch:
            self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-writer")

    async def stop(self) -> None:
        """Let a flush in progress finish (cancelling it could lose its rows), then
        write what is left."""
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.flush()

    async def flush(self) -> None:
        while self._pending:
            rows, self._pending = self._pending[: self._batch], self._pending[self._batch :]
            try:
                await self._store.record_usage(rows)
            except BaseException:
                self._pending[:0] = rows
                raise

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._flush_seconds)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("writing usage failed; %d rows kept for retry", len(self._pending))


@dataclass
class Meter:
    """What one request has used so far; turned into a ledger row at the end."""

    request_id: str
    endpoint: str
    user_id: int | None
    token_id: str | None
    end_user: str | None = None
    model: str = ""
    version_id: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_record(self, status: str, error_code: str | None = None) -> UsageRecord:
        ended = datetime.now(UTC)
        return UsageRecord(
            request_id=self.request_id,
            user_id=self.user_id,
            token_id=self.token_id,
            endpoint=self.endpoint,
            model=self.model,
            version_id=self.version_id,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            status=status,
            error_code=error_code,
            end_user=self.end_user,
            latency_ms=int((ended - self.started_at).total_seconds() * 1000),
            started_at=self.started_at,
            ended_at=ended,
        )
