"""The Python examples in examples/ run as written against a real server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.server import Server

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize(
    "name",
    [
        "chat.py",
        "streaming.py",
        "tool_call.py",
        "tool_loop.py",
        "responses.py",
        "responses_tools.py",
    ],
)
def test_python_example(server: Server, name: str) -> None:
    env = {
        **os.environ,
        "PORTWAY_BASE_URL": server.base_url + "/v2/ext/openai/v1",
        "PORTWAY_PAT": server.admin_token,
    }
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    if "tool" in name:
        assert "get_weather" in result.stdout
