"""The ledger lag is the age of the oldest row the journal still holds."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from portway.metrics.ledger import ledger_lag
from portway.serving.ledger_journal import Journal, encode
from portway.store import UsageRecord


def row(ended: float) -> UsageRecord:
    at = datetime.fromtimestamp(ended, UTC)
    return UsageRecord(
        request_id="req_1",
        user_id=1,
        token_id=None,
        endpoint="chat.completions",
        model="m",
        version_id=None,
        prompt_tokens=1,
        completion_tokens=1,
        status="completed",
        error_code=None,
        end_user=None,
        latency_ms=1,
        started_at=at,
        ended_at=at,
    )


def test_an_empty_journal_has_no_lag(tmp_path: Path) -> None:
    assert ledger_lag(tmp_path / "missing") == 0
    Journal(tmp_path).close()
    assert ledger_lag(tmp_path) == 0


def test_the_oldest_first_row_of_any_segment_counts(tmp_path: Path) -> None:
    journal, other = Journal(tmp_path), Journal(tmp_path)
    journal.append(encode(row(1000.0)))
    journal.append(encode(row(900.0)))  # not first in its segment: not read
    journal.seal()
    journal.append(encode(row(1010.0)))
    other.append(encode(row(995.0)))
    assert ledger_lag(tmp_path, now=1100.0) == 105.0
    (tmp_path / "broken.0.jsonl").write_bytes(b"{not json\n")
    assert ledger_lag(tmp_path, now=1100.0) == 105.0
