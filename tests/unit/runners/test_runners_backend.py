"""RunnerChatBackend's scheduling, relaying, cancelling and failover, with in-process runners."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from portway.aio import aclose
from portway.backends.base import Delta, GenerationRequest, ImageRequest, Message, SamplingParams
from portway.errors import BadGateway, Overloaded, PortwayError
from portway.registry.errors import RunnerUnavailable
from portway.runners import wire
from portway.runners.backend import RunnerChatBackend
from portway.runners.errors import RunnerLost, RunnerTimeout
from portway.runners.kinds import runner_backend
from portway.runners.link import RunnerLink
from portway.runners.media import RunnerEmbeddingBackend, RunnerImageBackend
from portway.runners.wire import ModelInfo

INFO = ModelInfo(reference="alice/demo/models/echo", version="0" * 32, context_length=100)
REQUEST = GenerationRequest(messages=(Message("user", "hi"),), sampling=SamplingParams())


class FakeRunner:
    """Answers each chat frame with a prompt delta, then waits for ``release``."""

    def __init__(self, backend: RunnerChatBackend, name: str, concurrency: int = 1) -> None:
        self.link = RunnerLink(name, INFO, concurrency, "alice")
        self.frames: list[dict[str, Any]] = []
        self.answers: set[asyncio.Future[None]] = set()
        self.release = asyncio.Event()
        self.task = asyncio.ensure_future(self.link.pump(self._receive))
        backend.add(self.link)

    async def _receive(self, frame: dict[str, Any]) -> None:
        frame = json.loads(json.dumps(frame))
        self.frames.append(frame)
        if frame["type"] != "cancel":
            answer = asyncio.ensure_future(self._answer(frame["id"]))
            self.answers.add(answer)
            answer.add_done_callback(self.answers.discard)

    def send(self, frame: dict[str, Any]) -> None:
        parsed = wire.parse_runner_frame(json.dumps(frame))
        assert not isinstance(parsed, wire.Hello)
        self.link.deliver(parsed)

    async def _answer(self, call_id: str) -> None:
        self.send(wire.delta_frame(call_id, Delta(prompt_tokens=3)))
        await self.release.wait()
        self.send(wire.delta_frame(call_id, Delta(text=self.link.name, tokens=1)))
        self.send(wire.delta_frame(call_id, Delta(finish_reason="stop")))

    def chats(self) -> list[str]:
        return [frame["id"] for frame in self.frames if frame["type"] == "chat"]

    def kill(self, backend: RunnerChatBackend) -> None:
        self.link.lose()
        backend.remove(self.link)


async def collect(stream: AsyncIterator[Delta]) -> list[Delta]:
    return [delta async for delta in stream]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_no_runner_is_503_with_retry_after() -> None:
    backend = RunnerChatBackend("alice/demo/models/echo", INFO)
    with pytest.raises(RunnerUnavailable) as caught:
        await anext(backend.generate(REQUEST))
    assert caught.value.status == 503
    assert caught.value.headers["Retry-After"] == "5"


async def test_fewest_in_flight_first_then_fifo_then_overloaded() -> None:
    backend = RunnerChatBackend("alice/demo/models/echo", INFO, max_queue=1)
    one, two = FakeRunner(backend, "one"), FakeRunner(backend, "two")
    first, second, third = (backend.generate(REQUEST) for _ in range(3))
    assert (await anext(first)).prompt_tokens == 3
    assert (await anext(second)).prompt_tokens == 3
    assert (len(one.chats()), len(two.chats())) == (1, 1)
    waiting = asyncio.ensure_future(anext(third))
    await settle()
    assert not waiting.done()
    with pytest.raises(Overloaded):
        await anext(backend.generate(REQUEST))
    one.release.set()
    texts = [delta.text for delta in await collect(first)]
    assert texts == ["one", ""]
    assert (await waiting).prompt_tokens == 3
    assert len(one.chats()) == 2
    two.release.set()
    assert [delta.text for delta in await collect(second)] == ["two", ""]
    assert [delta.text for delta in await collect(third)] == ["one", ""]
    assert one.link.served == 2 and one.link.in_flight == 0


async def test_closing_early_sends_cancel() -> None:
    backend = RunnerChatBackend("alice/demo/models/echo", INFO)
    runner = FakeRunner(backend, "one")
    stream = backend.generate(REQUEST)
    await anext(stream)
    await aclose(stream)
    await settle()
    assert runner.frames[-1] == {"type": "cancel", "id": runner.chats()[0]}
    assert runner.link.in_flight == 0


async def test_unstarted_requests_move_started_ones_fail() -> None:
    backend = RunnerChatBackend("alice/demo/models/echo", INFO)
    one, two = FakeRunner(backend, "one", concurrency=2), FakeRunner(backend, "two")
    two.link.concurrency = 0  # busy until one dies
    started = backend.generate(REQUEST)
    await anext(started)
    one.frames.clear()
    one._answer = lambda call_id: asyncio.sleep(0)  # type: ignore[method-assign]
    unstarted = asyncio.ensure_future(anext(backend.generate(REQUEST)))
    await settle()
    assert len(one.chats()) == 1
    two.link.concurrency = 1
    one.kill(backend)
    with pytest.raises(RunnerLost):
        await anext(started)
    assert (await unstarted).prompt_tokens == 3
    assert len(two.chats()) == 1


async def test_last_runner_leaving_fails_the_queue() -> None:
    backend = RunnerChatBackend("alice/demo/models/echo", INFO)
    runner = FakeRunner(backend, "one")
    busy = backend.generate(REQUEST)
    await anext(busy)
    queued = asyncio.ensure_future(anext(backend.generate(REQUEST)))
    await settle()
    runner.kill(backend)
    with pytest.raises(RunnerUnavailable):
        await queued
    with pytest.raises(RunnerLost):
        await anext(busy)


async def test_error_frames_become_openai_errors() -> None:
    backend = RunnerChatBackend("alice/demo/models/echo", INFO)
    runner = FakeRunner(backend, "one")
    runner._answer = lambda call_id: asyncio.sleep(  # type: ignore[method-assign]
        0,
        runner.send(
            {"type": "error", "id": call_id, "message": "ValueError: no", "code": "model_error"}
        ),
    )
    with pytest.raises(PortwayError) as caught:
        await anext(backend.generate(REQUEST))
    assert (caught.value.status, caught.value.code) == (500, "model_error")
    assert caught.value.message == "ValueError: no"
    runner._answer = lambda call_id: asyncio.sleep(  # type: ignore[method-assign]
        0, runner.send({"type": "error", "id": call_id, "message": "no", "status": 401})
    )
    with pytest.raises(PortwayError) as caught:
        await anext(backend.generate(REQUEST))
    assert (caught.value.status, caught.value.type) == (400, "invalid_request_error")


async def test_a_first_delta_with_text_gets_a_prompt_delta_before_it() -> None:
    backend = RunnerChatBackend("alice/demo/models/echo", INFO)
    runner = FakeRunner(backend, "one")

    async def answer(call_id: str) -> None:
        runner.send(wire.delta_frame(call_id, Delta(text="a", tokens=1, prompt_tokens=4)))
        runner.send(wire.delta_frame(call_id, Delta(finish_reason="stop")))

    runner._answer = answer  # type: ignore[method-assign]
    deltas = await collect(backend.generate(REQUEST))
    assert deltas == [
        Delta(prompt_tokens=4),
        Delta(text="a", tokens=1),
        Delta(finish_reason="stop"),
    ]


async def test_embedding_and_image_results_are_checked() -> None:
    info = ModelInfo(
        reference="alice/demo/models/e", version="0" * 32, kind="embedding", dimensions=2
    )
    embedder = RunnerEmbeddingBackend("alice/demo/models/e", info)
    runner = FakeRunner(embedder, "one")  # type: ignore[arg-type]

    async def vectors(call_id: str) -> None:
        runner.send({"type": "result", "id": call_id, "vectors": [[1.0, 2.0], [3, 4]]})

    runner._answer = vectors  # type: ignore[method-assign]
    assert await embedder.embed(["a", "b"]) == [[1.0, 2.0], [3.0, 4.0]]
    with pytest.raises(BadGateway, match="one vector per text"):
        await embedder.embed(["a"])
    images = RunnerImageBackend("alice/demo/models/i", info)
    runner = FakeRunner(images, "two")  # type: ignore[arg-type]

    async def not_png(call_id: str) -> None:
        runner.send({"type": "result", "id": call_id, "images": [{"png": "aGVsbG8="}]})

    runner._answer = not_png  # type: ignore[method-assign]
    with pytest.raises(BadGateway, match="not a PNG"):
        await images.generate(ImageRequest("p", 1, 64, 64))


async def test_a_request_that_keeps_losing_its_runner_fails_after_three() -> None:
    backend = RunnerChatBackend("alice/demo/models/echo", INFO)
    runners = [FakeRunner(backend, name) for name in ("one", "two", "three", "four")]

    def crash(runner: FakeRunner) -> Any:
        async def answer(call_id: str) -> None:
            runner.kill(backend)

        return answer

    for runner in runners:
        runner._answer = crash(runner)  # type: ignore[method-assign]
    with pytest.raises(RunnerLost, match="3 runners serving"):
        await anext(backend.generate(REQUEST))
    assert [len(runner.chats()) for runner in runners] == [1, 1, 1, 0]
    assert backend.attached


async def test_a_runner_quiet_past_its_deadline_is_a_504_and_gets_a_cancel() -> None:
    quick = wire.RunnerTimeouts(first_byte=0.05, idle=0.05)
    info = INFO.model_copy(update={"timeouts": quick})
    backend = RunnerChatBackend("alice/demo/models/echo", info)
    runner = FakeRunner(backend, "r1")  # sends its prompt delta, then nothing
    with pytest.raises(RunnerTimeout) as caught:
        await collect(backend.generate(REQUEST))
    assert (caught.value.status, caught.value.code) == (504, "runner_timeout")
    assert "idle" in caught.value.message
    await settle()
    assert runner.frames[-1] == {"type": "cancel", "id": runner.chats()[0]}
    assert runner.link.in_flight == 0


def test_the_catalogues_deadlines_win_over_the_runners() -> None:
    folder = wire.RunnerTimeouts(first_byte=5, idle=6)
    declared = wire.RunnerTimeouts(first_byte=7, idle=8)
    info = INFO.model_copy(update={"timeouts": folder})
    assert runner_backend("alice/demo/models/echo", "chat", info).timeouts == folder
    assert runner_backend("a/b/models/c", "chat", info, timeouts=declared).timeouts == declared
    assert runner_backend("a/b/models/c", "image").timeouts == wire.RunnerTimeouts()
