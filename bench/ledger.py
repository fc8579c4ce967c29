"""What recording one request's usage costs: the journaled ledger against the
in-memory queue it replaced (rows flushed every 0.5 s, lost on a crash).

Measures, per row: the request path's cost (``UsageRecorder.record``: bound the
values, encode one JSON line, one ``write`` system call; the old recorder
appended to a list), and the writer's cost (journal segment read back, rows
inserted into SQLite by ``entry_id``; the old writer inserted from memory).

    .venv/bin/python bench/ledger.py [--rows 20000] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from portway.serving.usage import UsageRecorder
from portway.store import Store, UsageRecord


def row(index: int) -> UsageRecord:
    now = datetime.now(UTC)
    return UsageRecord(
        request_id=f"req_{index:024x}",
        user_id=None,
        token_id=None,
        endpoint="chat.completions",
        model="google/gemma/models/gemma-3-270m",
        version_id="0" * 32,
        prompt_tokens=12,
        completion_tokens=256,
        status="completed",
        error_code=None,
        end_user="end-user-42",
        latency_ms=180,
        started_at=now,
        ended_at=now,
    )


def per_row_us(record: Callable[[UsageRecord], None], rows: list[UsageRecord]) -> float:
    start = time.perf_counter()
    for item in rows:
        record(item)
    return (time.perf_counter() - start) / len(rows) * 1e6


async def one_run(rows: list[UsageRecord], directory: Path) -> dict[str, float]:
    store = await Store.open(f"sqlite+aiosqlite:///{directory / 'portway.db'}")
    try:
        old: list[UsageRecord] = []
        old_record = per_row_us(old.append, rows)
        start = time.perf_counter()
        for begin in range(0, len(old), 500):
            await store.record_usage(old[begin : begin + 500])
        old_write = (time.perf_counter() - start) / len(rows) * 1e6
        recorder = UsageRecorder(store, directory / "ledger", flush_seconds=3600)
        await recorder.start()
        new_record = per_row_us(recorder.record, rows)
        start = time.perf_counter()
        await recorder.flush()
        new_write = (time.perf_counter() - start) / len(rows) * 1e6
        await recorder.stop()
    finally:
        await store.close()
    return {
        "old_record": old_record,
        "new_record": new_record,
        "old_write": old_write,
        "new_write": new_write,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    results: list[dict[str, float]] = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as scratch:
            results.append(await one_run([row(i) for i in range(args.rows)], Path(scratch)))
    print(f"{args.rows} rows a run, {args.runs} runs; microseconds per row, median (range)")
    print("| | in-memory queue (before) | journal (now) |")
    print("|---|---|---|")
    for label, key in (("request path: record()", "record"), ("writer: into SQLite", "write")):
        cells = []
        for era in ("old", "new"):
            values = [result[f"{era}_{key}"] for result in results]
            cells.append(
                f"{statistics.median(values):.1f} ({min(values):.1f} to {max(values):.1f})"
            )
        print(f"| {label} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    asyncio.run(main())
