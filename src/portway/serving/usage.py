"""The usage ledger writer: one row per request, on disk before its answer ends,
in the database soon after, never twice, and never held back by another row.

:meth:`UsageRecorder.record` bounds the row's values (:func:`bounded`) and appends
it to this process's journal (:mod:`portway.serving.ledger_journal`) before it
returns; every caller records a request's row before the answer's last byte is
sent, so an answer a client received is on disk even if the process is killed
next. A writer task moves sealed journal segments into the database in batches
(every ``flush_seconds``, or sooner after ``batch`` rows), inserting by the
row's unique ``entry_id`` so a replay stores nothing twice. A row the database
refuses for good (a data error) is set aside (``portway usage --rejected``,
once even if a journal is replayed) with one warning; while the database is
unreachable or refuses for now (locked, a serialization failure or deadlock, a
dropped connection: :func:`~portway.serving.ledger_errors.is_temporary`) the rows
wait in the journal (one warning, then retries with backoff), and whatever is
left at shutdown or after a crash is written at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from portway.serving.ledger_errors import is_temporary
from portway.serving.ledger_journal import Journal, encode, read_segment
from portway.store import (
    MAX_END_USER,
    MAX_TEXT,
    MAX_TOKENS,
    Store,
    UsageRecord,
    printable,
)

log = logging.getLogger("portway.usage")

MAX_LATENCY_MS = 2**31 - 1
ADOPT_SECONDS = 30.0
"""How often a server looks for the journals of dead processes sharing its data dir."""
MAX_BACKOFF_SECONDS = 30.0


def bounded(record: UsageRecord) -> UsageRecord:
    """``record`` with every value in what the database stores: token counts in
    0..MAX_TOKENS, texts without NUL or lone surrogates and cut to their column,
    and an ``entry_id`` (kept if it has one)."""
    prompt, completion = _tokens(record.prompt_tokens), _tokens(record.completion_tokens)
    if (prompt, completion) != (record.prompt_tokens, record.completion_tokens):
        log.warning(
            "usage of %s: token counts %r/%r out of range, recorded as %d/%d",
            printable(record.request_id)[:MAX_TEXT],
            record.prompt_tokens,
            record.completion_tokens,
            prompt,
            completion,
        )
    return replace(
        record,
        request_id=_text(record.request_id, MAX_TEXT),
        endpoint=_text(record.endpoint, MAX_TEXT),
        model=_text(record.model, MAX_TEXT),
        version_id=_optional(record.version_id, MAX_TEXT),
        error_code=_optional(record.error_code, MAX_TEXT),
        end_user=_optional(record.end_user, MAX_END_USER),
        prompt_tokens=prompt,
        completion_tokens=completion,
        latency_ms=min(max(int(record.latency_ms), 0), MAX_LATENCY_MS),
        entry_id=record.entry_id or os.urandom(16).hex(),
    )


def _tokens(value: int) -> int:
    return min(max(int(value), 0), MAX_TOKENS)


def _text(value: str, limit: int) -> str:
    if len(value) <= limit and value.isascii() and "\x00" not in value:
        return value  # the common case, without copying
    return printable(value)[:limit]


def _optional(value: str | None, limit: int) -> str | None:
    return None if value is None else _text(value, limit)


class _TryLater(Exception):
    """The database does not answer, or cannot take rows now: keep the rows and
    try again later."""


class UsageRecorder:
    def __init__(
        self,
        store: Store,
        journal_dir: Path,
        flush_seconds: float = 0.5,
        batch: int = 500,
    ) -> None:
        self._store = store
        self._journal_dir = journal_dir
        self._flush_seconds = flush_seconds
        self._batch = batch
        self._journal: Journal | None = None
        self._unjournaled: list[UsageRecord] = []
        """Rows the journal could not take (a full disk): written from memory."""
        self._wake = asyncio.Event()
        self._writing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._unreachable = False
        self._disk_failed = False

    def record(self, record: UsageRecord) -> None:
        """Queue one row; it is on disk when this returns (see the module doc)."""
        row = bounded(record)
        try:
            if self._journal is None:
                raise OSError("the usage journal is not open")
            self._journal.append(encode(row))
        except OSError as exc:
            self._unjournaled.append(row)
            if not self._disk_failed:
                self._disk_failed = True
                log.warning("usage journal cannot be written (%s): rows kept in memory", exc)
        pending = len(self._unjournaled) + (self._journal.appended if self._journal else 0)
        if pending >= self._batch:
            self._wake.set()

    async def start(self) -> None:
        """Open the journal, write what dead processes left in it, start the writer."""
        self._journal = Journal(self._journal_dir)
        if adopted := self._journal.adopt():
            log.info("usage journal: replaying %d segments left by a previous run", adopted)
        await self.flush()
        self._task = asyncio.create_task(self._run(), name="usage-writer")

    async def stop(self) -> None:
        """Let a write in progress finish, write what is left, close the journal.
        Never raises: rows the database cannot take now wait for the next start."""
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if not await self.flush():
            log.warning("usage rows kept in %s: written at the next start", self._journal_dir)
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    async def flush(self) -> bool:
        """Write every queued row now. False if the database is unreachable (the
        rows stay queued)."""
        async with self._writing:
            try:
                await self._write_queued()
            except _TryLater as exc:
                if not self._unreachable:
                    self._unreachable = True
                    log.warning("usage ledger: %s; rows wait in the journal", exc.args[0])
                return False
            if self._unreachable:
                self._unreachable = False
                log.warning("usage ledger: the database answers again; queued rows written")
            return True

    async def _write_queued(self) -> None:
        if self._unjournaled:
            rows, self._unjournaled = self._unjournaled, []
            try:
                await self._write(rows)
            except _TryLater:
                self._unjournaled[:0] = rows
                raise
        if self._journal is None:
            return
        self._journal.seal()
        for segment in self._journal.sealed():
            rows, broken = await asyncio.to_thread(read_segment, segment)
            if broken:
                log.warning("usage journal %s: %d unreadable lines skipped", segment, broken)
            await self._write(rows)
            segment.unlink(missing_ok=True)

    async def _write(self, rows: list[UsageRecord]) -> None:
        for start in range(0, len(rows), self._batch):
            batch = rows[start : start + self._batch]
            try:
                await self._store.record_usage(batch)
            except Exception as exc:
                await self._check_for_now(exc)
                await self._write_one_by_one(batch)

    async def _write_one_by_one(self, rows: list[UsageRecord]) -> None:
        """Each row alone: one the database refuses for good is set aside, not retried."""
        for row in rows:
            try:
                await self._store.record_usage([row])
            except Exception as exc:
                await self._check_for_now(exc)
                await self._set_aside(row, _reason(exc))

    async def _set_aside(self, row: UsageRecord, reason: str) -> None:
        log.warning(
            "usage ledger: the database refused the row of %s (%s); set aside, "
            "see `portway usage --rejected`",
            row.request_id,
            reason[:500],
        )
        try:
            await self._store.set_aside_usage(row, reason)
        except Exception as exc:
            await self._check_for_now(exc)
            log.error("usage row could not be set aside (%s), dropped: %s", exc, encode(row))

    async def _check_for_now(self, exc: Exception) -> None:
        """Raise _TryLater unless ``exc`` refuses the rows for good."""
        if is_temporary(exc):
            raise _TryLater(f"the database cannot take rows now ({_reason(exc)})") from exc
        if not await self._store.ping():
            raise _TryLater(f"the database is unreachable ({_reason(exc)})") from exc

    async def _run(self) -> None:
        wait, adopted_at = self._flush_seconds, time.monotonic()
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()
            if self._journal is not None and time.monotonic() - adopted_at > ADOPT_SECONDS:
                adopted_at = time.monotonic()
                self._journal.adopt()
            try:
                written = await self.flush()
            except Exception:
                if wait == self._flush_seconds:  # the first failure of a streak
                    log.exception("writing usage failed; the rows stay queued")
                written = False
            wait = self._flush_seconds if written else min(wait * 2, MAX_BACKOFF_SECONDS)


def _reason(exc: BaseException) -> str:
    """What went wrong, with the driver's own error where there is one."""
    cause = exc.__cause__ or exc
    orig = getattr(cause, "orig", None)
    detail = f" ({type(orig).__name__}: {orig})" if orig is not None else ""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}{detail}"


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
    clock_started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    """``time.perf_counter()`` when the first generated token came, if one did."""
    on_end: Callable[[Meter, str], None] | None = field(default=None, repr=False, compare=False)
    """Told of the meter and its row's status once its row is written (metrics)."""

    def first_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()

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
