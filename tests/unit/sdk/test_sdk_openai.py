"""``OpenAIModelClass`` against the fault-injecting fake upstream, which it starts
itself from ``[openai] command``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest

from portway.backends.python.model import PythonChatBackend
from portway.errors import PortwayError
from portway.sdk import Reasoning, Text, ToolCallDelta, Usage, load_model_dir
from portway.sdk.openai_model import chunk_outputs
from tests.unit.sdk.sdk_helpers import collect, request, write_folder

REPO = Path(__file__).resolve().parents[3]
FORWARDER = """
from portway import OpenAIModelClass

class Forwarder(OpenAIModelClass):
    model = "ok"
    health_path = "/stats"
    startup_timeout = 60
"""


def _folder(tmp_path: Path, upstream_model: str = "ok") -> Path:
    command = [sys.executable, str(REPO / "tests" / "upstream_fake.py"), "--port", "{port}"]
    extra = f"[openai]\ncommand = {json.dumps(command)}\nmodel = {json.dumps(upstream_model)}\n"
    return write_folder(tmp_path / "forwarder", FORWARDER, extra)


async def test_forwards_a_streamed_chat_completion(tmp_path: Path) -> None:
    backend = load_model_dir(_folder(tmp_path)).backend
    assert isinstance(backend, PythonChatBackend)
    await backend.start()
    server = backend.model._server  # type: ignore[attr-defined]
    try:
        deltas = await collect(backend, request("hi", max_tokens=50))
        assert "".join(delta.text for delta in deltas) == "Hello from the fake upstream."
        assert [d.prompt_tokens for d in deltas if d.prompt_tokens is not None][-1] == 7
        assert sum(delta.tokens for delta in deltas) == 6
        assert deltas[-1].finish_reason == "stop"
        async with httpx.AsyncClient() as client:
            stats = (await client.get(f"http://127.0.0.1:{server.port}/stats")).json()
        assert stats["calls"] == {"ok": 1}
        assert stats["open_streams"] == 0
        pointed = load_model_dir(
            write_folder(
                tmp_path / "pointed",
                FORWARDER,
                f'[openai]\nbase_url = "http://127.0.0.1:{server.port}/v1"\n',
            )
        ).backend
        await pointed.start()
        deltas = await collect(pointed, request("hi"))  # type: ignore[arg-type]
        assert "".join(delta.text for delta in deltas) == "Hello from the fake upstream."
        await pointed.close()
    finally:
        await backend.close()
    assert server.process.poll() is not None


async def test_upstream_errors_keep_their_status(tmp_path: Path) -> None:
    backend = load_model_dir(_folder(tmp_path, "status-400")).backend
    await backend.start()
    try:
        with pytest.raises(PortwayError) as caught:
            await collect(backend, request("hi"))
        assert caught.value.status == 400
    finally:
        await backend.close()


async def test_a_server_that_never_gets_healthy(tmp_path: Path) -> None:
    folder = write_folder(
        tmp_path / "bad",
        FORWARDER,
        f'[openai]\ncommand = ["{sys.executable}", "-c", "raise SystemExit(3)"]\n',
    )
    backend = load_model_dir(folder).backend
    with pytest.raises(RuntimeError, match="exited with status 3"):
        await backend.start()


def test_chunks_become_typed_outputs() -> None:
    chunk = {
        "choices": [
            {
                "delta": {
                    "reasoning_content": "hmm",
                    "content": "Hi",
                    "tool_calls": [
                        {"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{"}}
                    ],
                }
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4},
    }
    assert chunk_outputs(chunk) == [
        Reasoning("hmm"),
        Text("Hi"),
        ToolCallDelta(0, "c1", "f", "{"),
        Usage(3, 4),
    ]
    with pytest.raises(RuntimeError, match="the upstream failed: boom"):
        chunk_outputs({"error": {"message": "boom"}})


async def test_a_stream_without_usage_counts_one_token_per_chunk(tmp_path: Path) -> None:
    backend = load_model_dir(_folder(tmp_path, "no-usage")).backend
    await backend.start()
    try:
        deltas = await collect(backend, request("hi", max_tokens=6))
        assert sum(delta.tokens for delta in deltas) == 6
        assert deltas[-1].finish_reason == "length"
    finally:
        await backend.close()
