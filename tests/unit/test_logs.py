"""What clients and runners send cannot forge a log line."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from portway.logs import FORMAT, SafeFormatter, escape

FORGED = "2026-01-01 00:00:00,000 INFO portway.access forged"


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(SafeFormatter(FORMAT))
    logger = logging.getLogger("portway.test-logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, out
    finally:
        logger.removeHandler(handler)


def test_control_characters_are_escaped() -> None:
    assert escape("a\nb\rc\x00d\x1b[31me\u2028f\x85") == "a\\nb\\rc\\x00d\\x1b[31me\\u2028f\\x85"
    assert escape("café / ünïcode ok") == "café / ünïcode ok"


def test_a_runner_name_with_a_newline_stays_on_its_line(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = logged
    logger.info("runner %s attached to %s", "evil\n" + FORGED, "a/b/models/c\x00")
    [line] = out.getvalue().splitlines()
    assert line.endswith("runner evil\\n" + FORGED + " attached to a/b/models/c\\x00")


def test_a_traceback_is_indented(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = logged
    try:
        raise ValueError("bad name\n" + FORGED)
    except ValueError:
        logger.exception("failed for %s", "path\x00")
    first, *rest = out.getvalue().splitlines()
    assert first.endswith("failed for path\\x00")
    assert rest and all(line.startswith("    ") for line in rest)
    assert not any(line.startswith("2026") for line in rest)
