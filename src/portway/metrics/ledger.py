"""``portway_usage_ledger_lag_seconds``: how long the oldest usage row not yet
in the database has waited, read from the ledger's journal at each scrape.

Every process sharing the data dir journals its rows there until the database
has them (:mod:`portway.serving.ledger_journal`), so one process's reading is
the whole host's. A segment's first row is its oldest; the lag is the age of the
oldest first row (0 when the journal is empty).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from portway.serving.ledger_journal import decode

MAX_SEGMENTS = 1000
"""Segments read per scrape at most (a database down for long leaves many)."""
MAX_LINE = 64 * 1024


def first_row_time(segment: Path) -> float | None:
    """When the first row of ``segment`` was recorded (a Unix time), if it has one."""
    try:
        with segment.open("rb") as file:
            line = file.readline(MAX_LINE)
    except OSError:  # written and removed since it was listed
        return None
    try:
        return decode(line).ended_at.timestamp()
    except (ValueError, TypeError, KeyError):
        return None


def ledger_lag(journal_dir: Path, now: float | None = None) -> float:
    """Seconds the oldest row in ``journal_dir`` has waited for the database."""
    segments = sorted(journal_dir.glob("*.jsonl"))[:MAX_SEGMENTS]
    times = [found for path in segments if (found := first_row_time(path)) is not None]
    if not times:
        return 0.0
    return max(0.0, (time.time() if now is None else now) - min(times))


class LedgerLag(Collector):
    def __init__(self, journal_dir: Path) -> None:
        self.journal_dir = journal_dir

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "portway_usage_ledger_lag_seconds",
            "Seconds the oldest usage row not yet in the database has waited (0: none waits).",
            value=ledger_lag(self.journal_dir),
        )
