"""``portway serve --metrics-address``: a value that is not HOST:PORT is refused
by the command line, as any bad flag is, before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from portway import workers
from portway.cli import main
from portway.settings import Settings


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """The settings ``serve`` would start with (nothing is started)."""
    seen: list[Settings] = []

    def serve(settings: Settings) -> int:
        seen.append(settings)
        return 0

    monkeypatch.setattr(workers, "serve", serve)
    return seen


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("localhost", "'localhost' is not HOST:PORT"),
        ("127.0.0.1:http", "'127.0.0.1:http' is not HOST:PORT"),
        (":9100", "':9100' is not HOST:PORT"),
        ("127.0.0.1:70000", "the port must be 1-65535"),
    ],
)
def test_a_bad_metrics_address_is_a_usage_error(
    tmp_path: Path, started: list[Settings], value: str, reason: str
) -> None:
    args = ["serve", "--data-dir", str(tmp_path), "--metrics-address", value]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--metrics-address'" in result.output
    assert reason in result.output
    assert "Traceback" not in result.output
    assert started == []


def test_a_good_metrics_address_is_kept_as_given(tmp_path: Path, started: list[Settings]) -> None:
    args = ["serve", "--data-dir", str(tmp_path), "--metrics-address", "[::1]:9100"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert [settings.metrics_address for settings in started] == ["[::1]:9100"]
