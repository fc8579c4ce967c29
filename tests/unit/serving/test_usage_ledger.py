"""The usage ledger writer: bad rows never block it, and a crash loses no row.

Runs against SQLite and (when reachable) PostgreSQL, like ``test_store.py``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy.exc import OperationalError

from portway.cli import main
from portway.serving.usage import UsageRecorder
from portway.store import MAX_TOKENS, Store, UsageRecord
from tests.unit.databases import usage
from tests.unit.store.test_store import _SRC_DIR

BAD_VALUES: dict[str, dict[str, Any]] = {
    "overlong user": {"end_user": "u" * 300},
    "NUL in user": {"end_user": "a\x00b"},
    "lone surrogate in user": {"end_user": "a\ud800b"},
    "10**19 tokens": {"completion_tokens": 10**19},
    "negative tokens": {"prompt_tokens": -5},
    "beyond int32 tokens": {"prompt_tokens": 3_000_000_000},
    "overlong model": {"model": "m" * 500},
}


def recorder(store: Store, journal: Path) -> UsageRecorder:
    return UsageRecorder(store, journal, flush_seconds=3600)


@pytest.mark.parametrize("bad", list(BAD_VALUES), ids=list(BAD_VALUES))
async def test_a_bad_value_is_bounded_and_blocks_no_row(
    store: Store, tmp_path: Path, bad: str
) -> None:
    writer = recorder(store, tmp_path / "ledger")
    await writer.start()
    writer.record(usage("before"))
    writer.record(usage("bad", **BAD_VALUES[bad]))
    writer.record(usage("after"))
    await writer.stop()
    rows = {row.request_id: row for row in await store.list_usage()}
    assert sorted(rows) == ["after", "bad", "before"]
    row = rows["bad"]
    assert 0 <= row.prompt_tokens <= MAX_TOKENS
    assert 0 <= row.completion_tokens <= MAX_TOKENS
    assert row.end_user is None or (len(row.end_user) <= 256 and "\x00" not in row.end_user)
    assert len(row.model) <= 200
    assert await store.rejected_usage() == []


async def test_token_counts_beyond_int32_are_kept_exactly(store: Store, tmp_path: Path) -> None:
    writer = recorder(store, tmp_path / "ledger")
    await writer.start()
    writer.record(usage("big", prompt_tokens=3_000_000_000, completion_tokens=2**33))
    await writer.stop()
    [row] = await store.list_usage()
    assert (row.prompt_tokens, row.completion_tokens) == (3_000_000_000, 2**33)
    [summary] = await store.usage_summary()
    assert summary.prompt_tokens == 3_000_000_000


async def test_a_refused_row_is_set_aside_once_and_the_rest_written(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer = recorder(store, tmp_path / "ledger")
    await writer.start()
    writer.record(usage("first"))
    writer.record(usage("ghost", user_id=987654))  # a user deleted meanwhile: refused
    writer.record(usage("last"))
    with caplog.at_level(logging.WARNING, logger="portway.usage"):
        await writer.flush()
        writer.record(usage("later"))
        await writer.flush()
        await writer.stop()
    assert sorted(row.request_id for row in await store.list_usage()) == [
        "first",
        "last",
        "later",
    ]
    [rejected] = await store.rejected_usage()
    assert rejected.request_id == "ghost"
    assert rejected.record["user_id"] == 987654
    assert rejected.reason
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "ghost" in warnings[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info]


class DownStore:
    """A database that cannot be reached."""

    def __init__(self) -> None:
        self.calls = 0

    async def record_usage(self, records: list[UsageRecord]) -> None:
        self.calls += 1
        raise OperationalError("INSERT", {}, ConnectionRefusedError("down"))

    async def ping(self) -> bool:
        return False


async def test_an_unreachable_database_keeps_rows_for_the_next_start(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    down = DownStore()
    writer = UsageRecorder(down, tmp_path / "ledger", flush_seconds=3600)  # type: ignore[arg-type]
    await writer.start()
    writer.record(usage("one"))
    writer.record(usage("two"))
    with caplog.at_level(logging.WARNING, logger="portway.usage"):
        await writer.flush()
        await writer.flush()
        await writer.stop()  # does not raise: the rows stay in the journal
    assert down.calls > 0
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) <= 2
    assert not [r for r in caplog.records if r.exc_info]
    later = recorder(store, tmp_path / "ledger")
    await later.start()
    await later.stop()
    assert sorted(row.request_id for row in await store.list_usage()) == ["one", "two"]


CRASHING_WRITER = """
import asyncio, os, signal, sys
from datetime import UTC, datetime
from pathlib import Path
from portway.serving.usage import UsageRecorder
from portway.store import Store, UsageRecord

async def main() -> None:
    store = await Store.open(sys.argv[1])
    writer = UsageRecorder(store, Path(sys.argv[2]), flush_seconds=3600)
    await writer.start()
    now = datetime.now(UTC)
    for index in range(int(sys.argv[3])):
        writer.record(UsageRecord(
            request_id=f"r{index}", user_id=None, token_id=None, endpoint="chat",
            model="m", version_id=None, prompt_tokens=1, completion_tokens=2,
            status="completed", error_code=None, end_user=None, latency_ms=1,
            started_at=now, ended_at=now))
        if index == int(sys.argv[4]):
            await writer.flush()  # these are in the database, and may be in the journal
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


async def test_rows_recorded_before_a_kill_are_written_once_at_the_next_start(
    db_url: str, tmp_path: Path
) -> None:
    journal = tmp_path / "ledger"
    pythonpath = os.pathsep.join([_SRC_DIR, os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": pythonpath}
    child = await asyncio.create_subprocess_exec(
        *[sys.executable, "-c", CRASHING_WRITER, db_url, str(journal), "7", "2"],
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await child.communicate()
    assert child.returncode == -signal.SIGKILL, stderr.decode()
    opened = await Store.open(db_url)
    try:
        writer = recorder(opened, journal)
        await writer.start()
        await writer.stop()
        again = recorder(opened, journal)  # replaying twice writes nothing twice
        await again.start()
        await again.stop()
        ids = sorted(row.request_id for row in await opened.list_usage())
    finally:
        await opened.close()
    assert ids == [f"r{index}" for index in range(7)]


async def test_a_replayed_row_already_in_the_database_is_not_written_twice(
    store: Store, tmp_path: Path
) -> None:
    first = recorder(store, tmp_path / "ledger")
    await first.start()
    first.record(usage("once"))
    await first.flush()
    record = (await store.list_usage())[0]
    await store.record_usage([record])  # the same entry again, as a replay would
    await first.stop()
    assert [row.request_id for row in await store.list_usage()] == ["once"]


def test_portway_usage_rejected_lists_the_rows_set_aside(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'portway.db'}"

    async def set_aside() -> None:
        opened = await Store.open(url)
        try:
            await opened.set_aside_usage(usage("ghost", user_id=987654), "IntegrityError: no user")
        finally:
            await opened.close()

    asyncio.run(set_aside())
    result = CliRunner().invoke(
        main, ["usage", "--rejected", "--data-dir", str(tmp_path), "--database-url", url]
    )
    assert result.exit_code == 0, result.output
    header, line = result.output.strip().splitlines()
    assert header.split("\t") == ["rejected_at", "request_id", "reason", "record"]
    assert line.split("\t")[1:3] == ["ghost", "IntegrityError: no user"]
    assert '"user_id":987654' in line
