"""``portway pat create`` against a local database (never a new one by mistake)
and against a running server's API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.server import Server

pytestmark = pytest.mark.e2e


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "portway", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={key: value for key, value in os.environ.items() if key != "PORTWAY_TOKEN"},
    )


def test_a_missing_database_is_not_made_unless_asked(tmp_path: Path) -> None:
    data_dir = tmp_path / "typo"
    refused = _run("pat", "create", "--user", "zed", "--data-dir", str(data_dir))
    assert refused.returncode != 0 and not refused.stdout
    assert str(data_dir / "portway.db") in refused.stderr
    assert "--create" in refused.stderr and "--server" in refused.stderr
    assert not data_dir.exists()
    for command in (["pat", "list"], ["pat", "revoke", "tok_x"]):
        assert _run(*command, "--data-dir", str(data_dir)).returncode != 0
    assert not data_dir.exists()
    made = _run("pat", "create", "--user", "zed", "--data-dir", str(data_dir), "--create")
    assert made.returncode == 0, made.stderr
    assert f"data dir {data_dir}" in made.stderr and str(data_dir / "portway.db") in made.stderr
    assert made.stdout.splitlines()[-1].startswith("pwt_")


def test_create_asks_a_running_server(server: Server) -> None:
    made = _run(
        "pat",
        "create",
        "--server",
        server.base_url,
        "--token",
        server.admin_token,
        "--user",
        "remote-rita",
        "--scope",
        "inference",
        "--name",
        "ci",
    )
    assert made.returncode == 0, made.stderr
    secret = made.stdout.splitlines()[-1]
    assert "for remote-rita" in made.stdout
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=secret, max_retries=0)
    assert client.models.list().data
    asked = ("--server", server.base_url, "--token", server.admin_token)
    listed = _run("pat", "list", "--user", "remote-rita", *asked)
    assert listed.returncode == 0, listed.stderr
    [line] = listed.stdout.splitlines()
    assert "\tremote-rita\tinference\t" in line and "\tactive\t" in line
    revoked = _run("pat", "revoke", line.split("\t")[0], *asked)
    assert revoked.returncode == 0, revoked.stderr
    with pytest.raises(openai.AuthenticationError):
        client.models.list()
    assert "\trevoked\t" in _run("pat", "list", "--user", "remote-rita", *asked).stdout
    plain = server.token("remote-sam")
    refused = _run("pat", "create", "--server", server.base_url, "--token", plain, "--user", "x")
    assert refused.returncode != 0 and "403" in refused.stderr and "admin" in refused.stderr


def test_the_401_points_to_the_right_fixes(server: Server) -> None:
    response = httpx.get(server.base_url + "/v1/models", headers={"Authorization": "Bearer nope"})
    message = response.json()["error"]["message"]
    assert "--data-dir" in message and "--server URL --token" in message
    assert "console" in message
