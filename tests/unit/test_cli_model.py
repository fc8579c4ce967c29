"""``portway model serve``: what it hands ``portway serve`` (not run here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from portway import cli


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The options each ``serve`` invoked would have run with."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(cli.serve, "callback", lambda **options: calls.append(options))
    monkeypatch.delenv("PORTWAY_PUBLIC_URL", raising=False)
    return calls


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "talker"
    folder.mkdir()
    (folder / "model.py").write_text("from portway import ModelClass\n")
    (folder / "portway-model.toml").write_text('[model]\nuser = "me"\napp = "a"\nid = "talker"\n')
    return folder


def model_serve(folder: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    data = folder.parent / "data"
    command = ["model", "serve", str(folder), "--data-dir", str(data), *args]
    return CliRunner().invoke(cli.main, command, env=env)


def test_public_url_flag_reaches_the_server(served: list[dict[str, Any]], folder: Path) -> None:
    result = model_serve(folder, "--public-url", "https://portway.example/base/")

    assert result.exit_code == 0, result.output
    [options] = served
    assert options["public_url"] == "https://portway.example/base"
    assert "at https://portway.example/base/v1" in result.output


def test_public_url_comes_from_the_environment(served: list[dict[str, Any]], folder: Path) -> None:
    result = model_serve(folder, env={"PORTWAY_PUBLIC_URL": "http://gateway:9000"})

    assert result.exit_code == 0, result.output
    assert served[0]["public_url"] == "http://gateway:9000"


def test_a_bad_public_url_is_refused(served: list[dict[str, Any]], folder: Path) -> None:
    result = model_serve(folder, "--public-url", "ftp://x")

    assert result.exit_code == 2
    assert "--public-url" in result.output
    assert not served


def test_without_one_the_server_builds_it_from_host_and_port(
    served: list[dict[str, Any]], folder: Path
) -> None:
    result = model_serve(folder, "--port", "8123")

    assert result.exit_code == 0, result.output
    assert served[0]["public_url"] is None
    assert "at http://127.0.0.1:8123/v1" in result.output
