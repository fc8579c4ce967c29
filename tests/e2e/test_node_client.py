"""The openai npm package against a real server (examples/node/chat.mjs)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from tests.e2e.conftest import GEMMA
from tests.e2e.server import Server
from tests.services import require_service

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "node"


def _run_node(server: Server, script: str) -> str:
    node = shutil.which("node")
    installed = (EXAMPLES / "node_modules" / "openai").is_dir()
    require_service("node", node is not None, "the node command is not on PATH")
    require_service("openai npm package", installed, f"run `npm ci --prefix {EXAMPLES}`")
    assert node is not None
    env = {
        **os.environ,
        "PORTWAY_BASE_URL": server.base_url + "/v1",
        "PORTWAY_PAT": server.admin_token,
        "PORTWAY_MODEL": f"{server.base_url}/{GEMMA}",
    }
    result = subprocess.run(
        [node, str(EXAMPLES / script)], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_node_chat_example(server: Server) -> None:
    output = _run_node(server, "chat.mjs")
    unary, streamed = (json.loads(line) for line in output.strip().splitlines())
    assert unary["unary"] == streamed["streamed"], "same seed, same text"
    assert unary["usage"]["completion_tokens"] == streamed["usage"]["completion_tokens"] > 0


def test_node_tool_loop_example(server: Server) -> None:
    result = json.loads(_run_node(server, "tool_loop.mjs").strip().splitlines()[-1])
    assert result["finish_reason"] == "tool_calls"
    assert result["tool_calls"][0]["function"]["name"] == "get_weather"
    assert "location" in json.loads(result["tool_calls"][0]["function"]["arguments"])
    assert isinstance(result["answer"], str)
