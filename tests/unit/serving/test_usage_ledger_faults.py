"""The usage ledger under faults: a short journal write, a database that refuses
for now (locked, a serialization failure, a dropped connection) rather than for
good, and a replay that sets the same row aside again."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError

from portway.serving.usage import UsageRecorder, bounded
from portway.store import Store, UsageRecord
from tests.unit.databases import usage


def recorder(store: Any, journal: Path) -> UsageRecorder:
    return UsageRecorder(store, journal, flush_seconds=3600)


def short_write_once(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Make the next journal write store only part of its line, as a full disk does."""
    real_write = os.write
    cut: list[bytes] = []

    def write(fd: int, data: bytes) -> int:
        if not cut and data.startswith(b"{"):
            cut.append(data)
            return real_write(fd, data[:10])
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)  # the journal's only writes are rows
    return cut


@pytest.mark.parametrize("truncates", [True, False], ids=["truncated", "sealed"])
async def test_a_short_journal_write_loses_no_row(
    store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    truncates: bool,
) -> None:
    if not truncates:
        monkeypatch.setattr(os, "ftruncate", _refuse)
    writer = recorder(store, tmp_path / "ledger")
    await writer.start()
    writer.record(usage("before"))
    cut = short_write_once(monkeypatch)
    writer.record(usage("cut"))
    writer.record(usage("after"))
    assert cut
    with caplog.at_level(logging.WARNING, logger="portway.usage"):
        await writer.stop()
    assert sorted(row.request_id for row in await store.list_usage()) == [
        "after",
        "before",
        "cut",
    ]
    torn = [r for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(torn) == (0 if truncates else 1)  # sealed: the fragment ends its segment


def _refuse(fd: int, length: int) -> None:
    raise OSError("ftruncate refused")


async def test_a_row_set_aside_twice_is_kept_once(store: Store) -> None:
    row = bounded(usage("ghost", user_id=987654))
    await store.set_aside_usage(row, "IntegrityError: no user")
    await store.set_aside_usage(row, "IntegrityError: no user")  # a replay
    await store.set_aside_usage(bounded(usage("other")), "DataError")
    assert sorted(r.request_id for r in await store.rejected_usage()) == ["ghost", "other"]


class _Orig(Exception):
    def __init__(self, sqlstate: str | None = None) -> None:
        super().__init__("driver error")
        self.sqlstate = sqlstate


def _invalidated() -> DBAPIError:
    return DBAPIError("INSERT", {}, _Orig(), connection_invalidated=True)


TEMPORARY: dict[str, Any] = {
    "sqlite locked": lambda: OperationalError("INSERT", {}, _Orig()),
    "connection dropped": _invalidated,
    "serialization failure": lambda: DBAPIError("INSERT", {}, _Orig("40001")),
    "deadlock": lambda: DBAPIError("INSERT", {}, _Orig("40P01")),
}
PERMANENT: dict[str, Any] = {
    "integrity": lambda: IntegrityError("INSERT", {}, _Orig("23503")),
    "data": lambda: DataError("INSERT", {}, _Orig("22003")),
    "overflow": lambda: OverflowError("int too big"),
    "value": lambda: ValueError("usage records name an unknown user or token"),
}


class FlakyStore:
    """The real store, whose inserts fail with ``error`` while ``failing``; it
    answers a ping all along."""

    def __init__(self, store: Store, error: Any) -> None:
        self.store, self.error, self.failing = store, error, True

    async def record_usage(self, records: list[UsageRecord]) -> None:
        if self.failing:
            raise self.error()
        await self.store.record_usage(records)

    async def set_aside_usage(self, record: UsageRecord, reason: str) -> None:
        await self.store.set_aside_usage(record, reason)

    async def ping(self) -> bool:
        return True


@pytest.mark.parametrize("error", list(TEMPORARY), ids=list(TEMPORARY))
async def test_a_temporary_refusal_keeps_the_rows_for_later(
    store: Store, tmp_path: Path, error: str
) -> None:
    flaky = FlakyStore(store, TEMPORARY[error])
    writer = recorder(flaky, tmp_path / "ledger")
    await writer.start()
    writer.record(usage("one"))
    writer.record(usage("two"))
    assert not await writer.flush()
    flaky.failing = False
    assert await writer.flush()
    await writer.stop()
    assert sorted(row.request_id for row in await store.list_usage()) == ["one", "two"]
    assert await store.rejected_usage() == []


@pytest.mark.parametrize("error", list(PERMANENT), ids=list(PERMANENT))
async def test_a_refusal_for_good_sets_the_row_aside(
    store: Store, tmp_path: Path, error: str
) -> None:
    flaky = FlakyStore(store, PERMANENT[error])
    writer = recorder(flaky, tmp_path / "ledger")
    await writer.start()
    writer.record(usage("one"))
    assert await writer.flush()
    flaky.failing = False
    await writer.stop()
    assert await store.list_usage() == []
    assert [row.request_id for row in await store.rejected_usage()] == ["one"]
