"""A hosted model behind Portway, with a real third-party upstream: llama-cpp-python's
own OpenAI-compatible server on the Gemma GGUF, which insists on an API key that
Portway keeps as an encrypted secret."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from portway.backends.llamacpp.default_model import ensure_default_gguf
from tests.e2e.ledger import wait_for_rows
from tests.e2e.server import Server
from tests.upstreams import UpstreamProcess, llama_server

MODEL = "llama/server/models/gemma"
API_KEY = "sk-llama-upstream-7f3e9c1b2a"
HELLO = [{"role": "user", "content": "Name three colours."}]
NO_END = {"1": -100, "106": -100, "212": -100}
"""Gemma's end-of-generation tokens forbidden: only max_tokens ends a reply (what the
model writes differs between CPUs; these tests must not depend on it)."""


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamProcess]:
    logs = tmp_path_factory.mktemp("llama-upstream")
    gguf = ensure_default_gguf(logs / "data")
    process = llama_server(logs, gguf)
    process.command += ["--api_key", API_KEY]
    process.headers = {"Authorization": f"Bearer {API_KEY}"}
    yield process.start(timeout=180)
    process.stop()


@pytest.fixture(scope="module")
def portway(
    tmp_path_factory: pytest.TempPathFactory, upstream: UpstreamProcess
) -> Iterator[Server]:
    catalog = f"""
default_model = false
default_embedding_model = false

[[models]]
user = "llama"
app = "server"
model = "gemma"
backend = "openai"
base_url = "{upstream.base_url}"
upstream_model = "gemma-upstream"
api_key_secret = "llama-key"
timeouts = {{ first_byte = 60, idle = 30, total = 120 }}
"""
    server = Server(tmp_path_factory.mktemp("portway-llama"), catalog=catalog)
    server.data_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "portway", "secret", "set", "llama-key", *server.store_args()],
        input=API_KEY,
        text=True,
        check=True,
        capture_output=True,
    )
    yield server.start()
    server.stop()


def _client(server: Server, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=token, max_retries=0)


def test_unary_through_portway(portway: Server) -> None:
    token = portway.token("uma")
    reply = _client(portway, token).chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=8, temperature=0, logit_bias=NO_END
    )
    assert reply.model == MODEL
    assert reply.choices[0].message.content
    assert reply.usage is not None
    assert reply.usage.completion_tokens > 0
    rows = wait_for_rows(portway, "uma", 1)
    assert len(rows) == 1
    assert rows[0].model == MODEL
    assert rows[0].status == "completed"
    assert rows[0].prompt_tokens == reply.usage.prompt_tokens
    assert rows[0].completion_tokens == reply.usage.completion_tokens


def test_stream_is_relayed_and_metered(portway: Server) -> None:
    """llama-cpp-python's server ignores ``stream_options``: it never reports usage
    in a stream, so the ledger gets Portway's estimate (about one token a chunk)."""
    token = portway.token("stan")
    stream = _client(portway, token).chat.completions.create(
        model=MODEL,
        messages=HELLO,
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
        logit_bias=NO_END,
    )
    chunks = list(stream)
    assert {chunk.model for chunk in chunks} == {MODEL}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices[0].finish_reason == "length"
    rows = wait_for_rows(portway, "stan", 1)
    assert rows[0].status == "completed"
    assert 8 <= rows[0].completion_tokens <= 16
    assert rows[0].prompt_tokens > 0


def test_stream_without_usage_has_no_usage_chunk(portway: Server) -> None:
    token = portway.token("sue")
    stream = _client(portway, token).chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=6, stream=True, logit_bias=NO_END
    )
    chunks = list(stream)
    assert chunks
    assert all(chunk.choices for chunk in chunks), "no usage chunk unless asked for"
    rows = wait_for_rows(portway, "sue", 1)
    assert rows[0].completion_tokens >= 6


def test_the_key_stays_secret(portway: Server, upstream: UpstreamProcess, tmp_path: Path) -> None:
    models = httpx.get(
        portway.base_url + "/v1/models",
        headers={"Authorization": f"Bearer {portway.admin_token}"},
    )
    assert MODEL in models.text
    assert API_KEY not in models.text
    health = httpx.get(
        portway.base_url + "/health", headers={"Authorization": f"Bearer {portway.admin_token}"}
    )
    assert API_KEY not in health.text
    assert health.json()["models"][0]["endpoints"][0]["state"] == "healthy"
    listed = portway.cli("secret", "list").stdout
    assert "llama-key" in listed
    assert API_KEY not in listed
    assert API_KEY not in portway.log_text()
    for database in portway.data_dir.glob("portway.db*"):
        assert API_KEY.encode() not in database.read_bytes()
    # Without the key the upstream refuses: the key Portway sends is what made it work.
    refused = httpx.post(
        upstream.base_url + "/chat/completions",
        json={"model": "gemma-upstream", "messages": HELLO, "max_tokens": 1},
    )
    assert refused.status_code == 401
