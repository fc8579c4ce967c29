"""The ``portway`` command's model and token listings."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.server import portway

CATALOG = """
default_embedding_model = false

[[models]]
user = "acme"
app = "bots"
model = "echo"
backend = "scripted"
visibility = "private"
aliases = ["echo"]
"""


def test_models_list_prints_what_is_served(tmp_path: Path) -> None:
    config = tmp_path / "portway.toml"
    config.write_text(CATALOG)
    lines = portway("models", "list", "--config", str(config)).stdout.splitlines()
    assert lines[0].split("\t")[:2] == ["google/gemma/models/gemma-3-270m", "llamacpp"]
    assert lines[1].split("\t") == ["acme/bots/models/echo", "scripted", "private", "echo"]


def test_a_bad_catalogue_is_reported(tmp_path: Path) -> None:
    config = tmp_path / "portway.toml"
    config.write_text('[[models]]\nuser = "../x"\n')
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "portway", "models", "list", "--config", str(config)],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert str(config) in result.stderr


def test_pat_create_prints_the_token_last(tmp_path: Path) -> None:
    out = portway("pat", "create", "--user", "zed", "--data-dir", str(tmp_path), "--create").stdout
    token = out.strip().splitlines()[-1]
    assert token.startswith("pwt_") and len(token) == 50
    listing = portway("pat", "list", "--data-dir", str(tmp_path)).stdout
    assert token not in listing and listing.startswith("tok_")
