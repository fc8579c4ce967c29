"""The runner's side: URLs, backoff, the worker that answers requests, big answers."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

import pytest
from websockets.asyncio.client import ClientConnection

from portway.backends.base import GenerationRequest, Message, SamplingParams
from portway.backends.scripted import ScriptedBackend
from portway.runners import client as runner_client
from portway.runners import wire
from portway.runners.client import Backoff, connect_url
from portway.runners.work import Worker, model_info

REQUEST = GenerationRequest(messages=(Message("user", "hi"),), sampling=SamplingParams())


def test_connect_url() -> None:
    assert connect_url("http://h:8000") == "ws://h:8000/v1/runners/connect"
    assert connect_url("https://h/v1/") == "wss://h/v1/runners/connect"
    with pytest.raises(ValueError, match="http"):
        connect_url("h:8000")


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    backoff = Backoff(first=1.0, cap=8.0)
    assert 0.5 <= backoff.delay(0) <= 1.0
    assert 2.0 <= backoff.delay(2) <= 4.0
    assert 4.0 <= backoff.delay(10) <= 8.0


def test_hello_describes_the_backend() -> None:
    info = model_info(ScriptedBackend(["a"]), "alice/demo/models/echo", "0" * 32)
    hello = wire.parse_runner_frame(json.dumps({"type": "hello", "model": info}))
    assert isinstance(hello, wire.Hello)
    assert (hello.model.kind, hello.model.context_length) == ("chat", 4096)
    assert hello.model.capabilities.tools


class Sent:
    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    async def __call__(self, frame: dict[str, Any]) -> None:
        self.frames.append(json.loads(json.dumps(frame)))


class Counted(Sent):
    """Sets ``reached`` once ``wanted`` frames are sent."""

    def __init__(self, wanted: int) -> None:
        super().__init__()
        self.wanted = wanted
        self.reached = asyncio.Event()

    async def __call__(self, frame: dict[str, Any]) -> None:
        await super().__call__(frame)
        if len(self.frames) >= self.wanted:
            self.reached.set()


async def test_worker_streams_deltas_and_reports_errors() -> None:
    worker, sent = Worker(ScriptedBackend(["a", "b"])), Sent()
    await worker.run(wire.call_frame("chat", "c1", {"request": REQUEST}), sent)
    deltas = [frame["delta"] for frame in sent.frames]
    assert deltas == [
        {"prompt_tokens": 4},
        {"text": "a", "tokens": 1},
        {"text": "b", "tokens": 1},
        {"finish_reason": "stop"},
    ]
    sent.frames.clear()
    await worker.run({"type": "embed", "id": "c2", "texts": ["x"]}, sent)
    assert sent.frames[0]["status"] == 400
    assert "serves a chat model" in sent.frames[0]["message"]
    sent.frames.clear()
    await worker.run({"type": "chat", "id": "c3", "request": {"messages": 5}}, sent)
    assert (sent.frames[0]["type"], sent.frames[0]["status"]) == ("error", 500)


async def test_cancelling_a_call_stops_the_generation() -> None:
    worker, sent = Worker(ScriptedBackend(["a"] * 100, delay=0.01)), Counted(3)
    task = asyncio.ensure_future(
        worker.run(wire.call_frame("chat", "c1", {"request": REQUEST}), sent)
    )
    # The prompt's delta and two tokens': it is generating (a deadline against hangs).
    await asyncio.wait_for(sent.reached.wait(), timeout=60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert 3 <= len(sent.frames) < 100
    assert all("finish_reason" not in frame["delta"] for frame in sent.frames)


async def test_an_answer_too_large_for_a_frame_becomes_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runner_client, "MAX_FRAME", 8192)
    sent: list[str] = []

    class Socket:
        async def send(self, text: str) -> None:
            sent.append(text)

    frame = {"type": "result", "id": "c1", "vectors": [[0.5] * 4000]}
    await runner_client._send(cast(ClientConnection, Socket()), frame)
    error = json.loads(sent[0])
    assert (error["type"], error["id"], error["status"]) == ("error", "c1", 500)
    assert "larger than a runner may send" in error["message"]


async def test_an_answer_holding_nan_becomes_an_error_the_server_accepts() -> None:
    sent: list[str] = []

    class Socket:
        async def send(self, text: str) -> None:
            sent.append(text)

    frame = {"type": "result", "id": "c1", "vectors": [[0.5, float("nan")]]}
    await runner_client._send(cast(ClientConnection, Socket()), frame)
    error = wire.parse_runner_frame(sent[0])
    assert isinstance(error, wire.ErrorFrame)
    assert (error.id, error.status) == ("c1", 500)
    assert "NaN or Infinity" in error.message
