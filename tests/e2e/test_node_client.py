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


def test_node_chat_example(server: Server) -> None:
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
        [node, str(EXAMPLES / "chat.mjs")], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    unary, streamed = (json.loads(line) for line in result.stdout.strip().splitlines())
    assert unary["unary"] == streamed["streamed"], "same seed, same text"
    assert unary["usage"]["completion_tokens"] == streamed["usage"]["completion_tokens"] > 0
