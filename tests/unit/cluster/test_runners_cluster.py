"""Runners shared between two processes' hubs over the machine's NATS (each test
with a subject prefix of its own): calls, cancels, concurrency, drain, death."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from portway.aio import aclose
from portway.auth.principal import Principal
from portway.backends.base import Delta, GenerationRequest, Message, SamplingParams
from portway.cluster.runners import ClusterRunners
from portway.cluster.runners_remote import RemoteLink
from portway.cluster.runners_wire import PIECE, Announcement, subject_token
from portway.errors import PortwayError
from portway.registry import refs
from portway.registry.errors import RunnerUnavailable
from portway.registry.models import ModelEntry, Registry
from portway.runners import wire
from portway.runners.backend import RunnerBackend, RunnerChatBackend
from portway.runners.errors import RunnerLost
from portway.runners.hub import RunnerHub
from portway.runners.link import RunnerLink
from portway.runners.media import RunnerEmbeddingBackend
from portway.runners.wire import Hello, ModelInfo
from portway.store import Store, User
from tests.services import require_service

NATS_URL = os.environ.get("PORTWAY_TEST_NATS_URL", "nats://127.0.0.1:4222")
VERSION = "7" * 32
REFERENCE = "alice/demo/models/echo"
VECTORS = "alice/demo/models/vectors"
REQUEST = GenerationRequest(messages=(Message("user", "hi"),), sampling=SamplingParams())


class FakeStore:
    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], datetime] = {}

    async def remember_runner_model(self, model: str, kind: str, visibility: str) -> None:
        pass

    async def register_model_version(self, model: str, version_id: str) -> datetime:
        start = datetime(2026, 1, 1, tzinfo=UTC)
        return self.seen.setdefault((model, version_id), start + timedelta(len(self.seen)))


@dataclass
class FakeRunner:
    """Answers each call with a prompt delta, its first message's length and its
    name, then waits for ``release`` before it finishes; records what it got."""

    link: RunnerLink
    entry: ModelEntry
    release: asyncio.Event = field(default_factory=asyncio.Event)
    frames: list[dict[str, Any]] = field(default_factory=list)
    running: int = 0
    most: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.pump = asyncio.ensure_future(self.link.pump(self._receive))

    async def _receive(self, frame: dict[str, Any]) -> None:
        frame = json.loads(json.dumps(frame))
        self.frames.append(frame)
        if frame["type"] == "chat":
            task = asyncio.ensure_future(self._chat(frame))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif frame["type"] == "embed":
            vectors = [[float(len(text))] * 4096 for text in frame["texts"]]  # several pieces
            self._send({"type": "result", "id": frame["id"], "vectors": vectors})

    async def _chat(self, frame: dict[str, Any]) -> None:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            size = len(frame["request"]["messages"][0]["content"])
            self._send(wire.delta_frame(frame["id"], Delta(prompt_tokens=3)))
            self._send(wire.delta_frame(frame["id"], Delta(text=f"{size} ", tokens=1)))
            await self.release.wait()
            self._send(wire.delta_frame(frame["id"], Delta(text=self.link.name, tokens=1)))
            self._send(wire.delta_frame(frame["id"], Delta(finish_reason="stop")))
        finally:
            self.running -= 1

    def _send(self, frame: dict[str, Any]) -> None:
        parsed = wire.parse_runner_frame(json.dumps(frame))
        assert isinstance(parsed, wire.DeltaFrame | wire.ResultFrame)
        self.link.deliver(parsed)

    def cancels(self) -> list[str]:
        return [frame["id"] for frame in self.frames if frame["type"] == "cancel"]


@dataclass
class Process:
    """One process's hub and its share of the cluster."""

    hub: RunnerHub
    runners: ClusterRunners
    nats: Any

    def backend(self, reference: str = REFERENCE) -> RunnerBackend:
        entry = self.hub.registry.runner_version(refs.parse(reference).ref, VERSION)
        assert entry is not None
        assert isinstance(entry.backend, RunnerBackend)
        return entry.backend

    async def attach(
        self, name: str, concurrency: int = 1, reference: str = REFERENCE, **info: Any
    ) -> FakeRunner:
        alice = Principal(User(1, "alice", False, datetime.now(UTC)), "tok", ("runner",))
        model = ModelInfo(reference=reference, version=VERSION, context_length=100, **info)
        hello = Hello(type="hello", model=model, concurrency=concurrency, runner=name)
        link, entry = await self.hub.attach(alice, hello)
        return FakeRunner(link, entry)


async def _nats() -> Any:
    import nats

    try:
        return await nats.connect(NATS_URL, connect_timeout=2, max_reconnect_attempts=0)
    except Exception as exc:
        require_service("NATS", False, f"{NATS_URL}: {exc or type(exc).__name__}")


@pytest.fixture
async def cluster() -> AsyncIterator[Callable[[str], Any]]:
    prefix = f"test{secrets.token_hex(4)}.runners"
    made: list[Process] = []

    async def start(name: str) -> Process:
        hub = RunnerHub(Registry([]), cast(Store, FakeStore()))
        connection = await _nats()
        runners = await ClusterRunners.start(connection, prefix, name, hub)
        made.append(Process(hub, runners, connection))
        return made[-1]

    yield start
    for process in made:
        if not process.nats.is_closed:
            await process.runners.stop(grace=0)
            await process.nats.close()


async def eventually(check: Callable[[], bool]) -> None:
    """Wait (at most 10 s) until ``check()`` holds."""
    async with asyncio.timeout(10):
        while not check():  # noqa: ASYNC110 (the states checked have no event)
            await asyncio.sleep(0.02)


def chat(process: Process) -> RunnerChatBackend:
    backend = process.backend()
    assert isinstance(backend, RunnerChatBackend)
    return backend


def remote_links(process: Process, reference: str = REFERENCE) -> list[RemoteLink]:
    try:
        links = process.backend(reference).pool.links
    except AssertionError:
        return []
    return [link for link in links if isinstance(link, RemoteLink)]


async def test_a_runner_of_a_serves_a_stream_at_b(cluster: Any) -> None:
    a, b = await cluster("host-a:1"), await cluster("host-b:2")
    runner = await a.attach("r1")
    await eventually(lambda: len(remote_links(b)) == 1)
    runner.release.set()
    deltas = [delta async for delta in chat(b).generate(REQUEST)]
    assert [delta.text for delta in deltas] == ["", "2 ", "r1", ""]
    assert deltas[0].prompt_tokens == 3
    assert deltas[-1].finish_reason == "stop"
    assert runner.cancels() == []
    await eventually(lambda: remote_links(b)[0].health()["served"] == 1)
    [detail] = b.hub.health()
    assert detail["id"] == REFERENCE
    assert detail["runners"] == [
        {
            "runner": "r1",
            "owner": "alice",
            "concurrency": 1,
            "in_flight": 0,
            "served": 1,
            "failed": 0,
            "process": "host-a:1",
        }
    ]
    assert a.hub.health()[0]["runners"][0]["process"] == "host-a:1"


async def test_large_requests_and_results_travel_in_pieces(cluster: Any) -> None:
    a, b = await cluster("a"), await cluster("b")
    runner = await a.attach("r1")
    await eventually(lambda: len(remote_links(b)) == 1)
    runner.release.set()
    long = GenerationRequest(
        messages=(Message("user", "x" * (3 * PIECE)),), sampling=REQUEST.sampling
    )
    texts = [delta.text async for delta in chat(b).generate(long)]
    assert texts[1] == f"{3 * PIECE} "
    await a.attach("e1", reference=VECTORS, kind="embedding", dimensions=4096)
    await eventually(lambda: len(remote_links(b, VECTORS)) == 1)
    backend = b.backend(VECTORS)
    assert isinstance(backend, RunnerEmbeddingBackend)
    vectors = await backend.embed(["ab", "abc"])
    assert [vector[:2] for vector in vectors] == [[2.0, 2.0], [3.0, 3.0]]


async def test_closing_the_stream_at_b_cancels_on_the_runner(cluster: Any) -> None:
    a, b = await cluster("a"), await cluster("b")
    runner = await a.attach("r1")
    await eventually(lambda: len(remote_links(b)) == 1)
    stream = chat(b).generate(REQUEST)
    assert (await anext(stream)).prompt_tokens == 3
    assert (await anext(stream)).text == "2 "
    await aclose(stream)
    await eventually(lambda: len(runner.cancels()) == 1)
    await eventually(lambda: runner.link.in_flight == 0 and not a.runners.serving.tasks)


async def test_the_owner_admits_one_call_per_slot_across_processes(cluster: Any) -> None:
    a, b, c = await cluster("a"), await cluster("b"), await cluster("c")
    runner = await a.attach("r1", concurrency=1)
    await eventually(lambda: len(remote_links(b)) == 1 and len(remote_links(c)) == 1)

    async def text(process: Process) -> str:
        return "".join([delta.text async for delta in chat(process).generate(REQUEST)])

    calls = [asyncio.ensure_future(text(process)) for process in (a, b, c, b)]
    await eventually(lambda: runner.running == 1)
    await asyncio.sleep(0.2)
    assert runner.running == 1
    runner.release.set()
    assert await asyncio.gather(*calls) == ["2 r1"] * 4
    assert runner.most == 1


async def test_a_full_queue_at_the_owner_is_503_at_b(cluster: Any) -> None:
    a, b = await cluster("a"), await cluster("b")
    runner = await a.attach("r1", concurrency=1)
    a.backend().pool.max_queue = 0
    await eventually(lambda: len(remote_links(b)) == 1)
    busy = chat(a).generate(REQUEST)
    await anext(busy)
    with pytest.raises(PortwayError) as caught:
        await anext(chat(b).generate(REQUEST))
    assert (caught.value.status, caught.value.code) == (503, "model_overloaded")
    assert caught.value.headers == {"Retry-After": "1"}
    runner.release.set()
    await aclose(busy)


async def test_fewest_in_flight_counts_other_processes_calls(cluster: Any) -> None:
    a, b = await cluster("a"), await cluster("b")
    one, two = await a.attach("one", concurrency=4), await a.attach("two", concurrency=4)
    await eventually(lambda: len(remote_links(b)) == 2)
    busy = [chat(a).generate(REQUEST) for _ in range(3)]
    for stream in busy:
        await anext(stream)  # a's three calls: two on one runner, one on the other
    loaded = max((one, two), key=lambda runner: runner.running)
    await eventually(lambda: {link.load for link in remote_links(b)} == {1, 2})
    stream = chat(b).generate(REQUEST)
    await anext(stream)
    idle = two if loaded is one else one
    await eventually(lambda: idle.running == 2)
    for runner in (one, two):
        runner.release.set()
    for open_stream in [*busy, stream]:
        await aclose(open_stream)


async def test_a_draining_runner_finishes_at_b_and_takes_no_more(cluster: Any) -> None:
    a, b = await cluster("a"), await cluster("b")
    runner = await a.attach("r1")
    await eventually(lambda: len(remote_links(b)) == 1)
    stream = chat(b).generate(REQUEST)
    await anext(stream)
    a.hub.drain(runner.link, runner.entry)
    await eventually(lambda: not remote_links(b))
    runner.release.set()
    assert [delta.text async for delta in stream] == ["2 ", "r1", ""]
    with pytest.raises(RunnerUnavailable):
        await anext(chat(b).generate(REQUEST))


async def test_a_runner_that_leaves_mid_stream_is_runner_lost_at_b(cluster: Any) -> None:
    a, b = await cluster("a"), await cluster("b")
    runner = await a.attach("r1")
    await eventually(lambda: len(remote_links(b)) == 1)
    stream = chat(b).generate(REQUEST)
    await anext(stream)
    await anext(stream)
    a.hub.detach(runner.link, runner.entry)
    with pytest.raises(RunnerLost):
        await anext(stream)
    await eventually(lambda: not remote_links(b))


async def test_a_silent_process_is_dropped_and_its_calls_lost(cluster: Any) -> None:
    a, b = await cluster("a"), await cluster("b")
    runner = await a.attach("r1")
    await eventually(lambda: len(remote_links(b)) == 1)
    stream = chat(b).generate(REQUEST)
    await anext(stream)
    await anext(stream)
    for task in a.runners._tasks:  # a dies: no goodbye, no more answers
        task.cancel()
    await a.nats.close()
    with pytest.raises(RunnerLost):
        await anext(stream)
    assert not remote_links(b)
    assert b.runners.peers == {}
    del runner


async def test_b_leaving_cancels_its_calls_at_a(cluster: Any) -> None:
    a, b = await cluster("a"), await cluster("b")
    runner = await a.attach("r1")
    await eventually(lambda: len(remote_links(b)) == 1)
    stream = chat(b).generate(REQUEST)
    await anext(stream)
    await b.runners.stop(grace=0)
    await eventually(lambda: len(runner.cancels()) == 1)
    await aclose(stream)


def test_processes_with_a_long_host_name_get_subject_tokens_of_their_own() -> None:
    host = "node-" + "x" * 60 + ".cluster.internal"
    names = [f"{host}-{pid}-{tag}" for pid, tag in ((7, "a1b2c3"), (8, "d4e5f6"))]
    tokens = [subject_token(name) for name in names]
    assert tokens[0] != tokens[1]
    assert tokens == [subject_token(name) for name in names]  # stable
    for name, token in zip(names, tokens, strict=True):
        assert Announcement(process=name, subject=token).subject == token
    assert subject_token("host.local-7-a1b2c3") == "host_local-7-a1b2c3"
