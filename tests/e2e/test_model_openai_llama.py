"""``OpenAIModelClass`` wrapping a real inference server: llama-cpp-python's own
OpenAI-compatible server on the Gemma GGUF, started by the model from its
``[openai] command`` and served with ``portway model serve``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from portway.backends.llamacpp.default_model import ensure_default_gguf
from tests.e2e.ledger import wait_for_rows
from tests.e2e.test_model_cli import ModelServer
from tests.upstreams import llama_server_command

REPO = Path(__file__).resolve().parents[2]
MODEL = "me/wrapped/models/llama"
WRAPPER = """
from portway import OpenAIModelClass


class LlamaServer(OpenAIModelClass):
    model = "gemma-upstream"
    startup_timeout = 180
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    data_dir = tmp_path_factory.mktemp("wrapped-data")
    gguf = ensure_default_gguf(data_dir)
    command = [*llama_server_command(gguf), "--port", "{port}"]
    folder = tmp_path_factory.mktemp("wrapper")
    (folder / "model.py").write_text(WRAPPER)
    (folder / "portway-model.toml").write_text(
        '[model]\nuser = "me"\napp = "wrapped"\nid = "llama"\ncontext_length = 2048\n'
        f"concurrency = 1\n\n[openai]\ncommand = {json.dumps(command)}\n"
    )
    server = ModelServer(data_dir, folder=folder).start(timeout=240)
    yield server
    assert server.stop() == 0


def _check_finish(finish: str | None, text: str | None, usage: Any) -> None:
    """What Gemma writes differs between CPUs (and a Python model takes no logit_bias
    to forbid its end tokens): a reply may end before max_tokens (6), never after.
    Tokens are one per chunk: this server reports no usage."""
    assert usage is not None
    if finish == "length":
        assert text
        assert usage.completion_tokens == 6
    else:
        assert finish == "stop"
        assert usage.completion_tokens <= 6


def test_unary_and_streamed_through_the_wrapped_server(served: ModelServer) -> None:
    client = openai.OpenAI(
        base_url=served.base_url + "/v1", api_key=served.admin_token, max_retries=0
    )
    messages = [{"role": "user", "content": "Name three colours."}]
    reply = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        max_tokens=6,
        temperature=0,  # type: ignore[arg-type]
    )
    assert reply.model == MODEL
    assert reply.usage is not None
    _check_finish(reply.choices[0].finish_reason, reply.choices[0].message.content, reply.usage)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=messages,  # type: ignore[arg-type]
        max_tokens=6,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    _check_finish(finish, text, chunks[-1].usage)
    rows = wait_for_rows(served, "admin", 2)
    assert sorted(row.completion_tokens for row in rows) == sorted(
        [reply.usage.completion_tokens, chunks[-1].usage.completion_tokens]  # type: ignore[union-attr]
    )
