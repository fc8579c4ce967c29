"""The relay service against a real (fake) upstream over HTTP, for every endpoint it
relays: chat, responses, embeddings and images, unary and streamed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from portway.aio import aclose
from portway.backends.scripted import ScriptedBackend
from portway.backends.upstream.backend import UpstreamBackend, upstream_backend
from portway.backends.upstream.http_client import open_session
from portway.backends.upstream.pool import Outcome
from portway.errors import InvalidRequest, UnsupportedParameter
from portway.registry.catalog import CatalogError, OpenAISpec
from portway.registry.models import ModelEntry, Registry
from portway.registry.refs import ModelRef
from portway.serving.context import RequestContext
from portway.serving.relay.endpoints import (
    CHAT,
    EMBEDDINGS,
    IMAGES,
    RESPONSES,
    RelayEndpoint,
)
from portway.serving.relay.service import RelayService
from tests.unit.doubles import Ledger, context, user
from tests.upstreams import FakeUpstream


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeUpstream]:
    fake = FakeUpstream(tmp_path_factory.mktemp("fake-upstream")).start()
    yield fake
    fake.stop()


def _entry(upstream: FakeUpstream, model: str, kind: str, upstream_model: str) -> ModelEntry:
    spec = OpenAISpec.model_validate(
        {
            "user": "up",
            "app": "stream",
            "model": model,
            "backend": "openai",
            "kind": kind,
            "base_url": upstream.base_url,
            "upstream_model": upstream_model,
        }
    )
    return ModelEntry(ModelRef("up", "stream", model), "0" * 32, upstream_backend(spec))


@pytest.fixture
async def relay(upstream: FakeUpstream) -> AsyncIterator[tuple[RelayService, Ledger]]:
    entries = [
        _entry(upstream, "chat", "chat", "ok"),
        _entry(upstream, "embed", "embedding", "embed-up"),
        _entry(upstream, "paint", "image", "paint-up"),
    ]
    ledger = Ledger()
    service = RelayService(Registry(entries), ledger, open_session())
    for entry in entries:
        entry.backend.attach(service.session, None)  # type: ignore[attr-defined]
    yield service, ledger
    await service.close()


def _ctx(endpoint: str) -> RequestContext:
    return context(endpoint, user("up"))


def _raw(**body: object) -> bytes:
    return json.dumps(body).encode()


def _entry_of(service: RelayService, name: str) -> ModelEntry:
    return service.registry.resolve(f"up/stream/models/{name}", _ctx("x").principal)


async def test_embeddings_relay_with_usage(relay: tuple[RelayService, Ledger]) -> None:
    service, ledger = relay
    raw = _raw(model="up/stream/models/embed", input=["a", "b"])
    call = service.accept(_ctx("embeddings"), _entry_of(service, "embed"), raw, EMBEDDINGS)
    body = json.loads(await service.complete(call))
    assert body["model"] == "up/stream/models/embed"
    assert len(body["data"]) == 2
    assert (ledger.rows[0].prompt_tokens, ledger.rows[0].status) == (6, "completed")
    assert ledger.rows[0].endpoint == "embeddings"


async def test_images_relay_counts_images(relay: tuple[RelayService, Ledger]) -> None:
    service, ledger = relay
    raw = _raw(model="up/stream/models/paint", prompt="a lighthouse", n=2)
    call = service.accept(_ctx("images.generations"), _entry_of(service, "paint"), raw, IMAGES)
    body = json.loads(await service.complete(call))
    assert [item["url"] for item in body["data"]] == ["https://images.example/fake.png"] * 2
    assert ledger.rows[0].completion_tokens == 2
    with pytest.raises(UnsupportedParameter):
        service.accept(
            _ctx("embeddings"), _entry_of(service, "embed"), _raw(stream=True), EMBEDDINGS
        )


async def test_wrong_kind_is_refused_before_anything_is_sent(
    relay: tuple[RelayService, Ledger], upstream: FakeUpstream
) -> None:
    service, ledger = relay
    with pytest.raises(InvalidRequest) as caught:
        service.accept(_ctx("chat"), _entry_of(service, "embed"), _raw(messages=[]), CHAT)
    assert caught.value.code == "wrong_model_kind"
    assert ledger.rows == []


async def test_responses_unary_and_stream(relay: tuple[RelayService, Ledger]) -> None:
    service, ledger = relay
    entry = _entry_of(service, "chat")
    call = service.accept(_ctx("responses"), entry, _raw(input="hi"), RESPONSES)
    body = json.loads(await service.complete(call))
    assert body["model"] == "up/stream/models/chat"
    call = service.accept(_ctx("responses"), entry, _raw(input="hi", stream=True), RESPONSES)
    stream = await service.stream(call)
    frames = b""
    try:
        async for frame in stream.frames:
            frames += frame
    finally:
        await aclose(stream.frames)
    events = [event for event in frames.decode().split("\n\n") if event]
    assert [event.split("\n")[0] for event in events] == [
        "event: response.created",
        "event: response.output_text.delta",
        "event: response.completed",
    ]
    completed = json.loads(events[-1].split("data: ", 1)[1])
    assert completed["response"]["model"] == "up/stream/models/chat"
    assert [(row.prompt_tokens, row.completion_tokens) for row in ledger.rows] == [(5, 2), (5, 2)]


async def test_chat_stream_frames(relay: tuple[RelayService, Ledger], tmp_path: Path) -> None:
    service, ledger = relay
    raw = _raw(messages=[{"role": "user", "content": "hi"}], stream=True)
    call = service.accept(_ctx("chat.completions"), _entry_of(service, "chat"), raw, CHAT)
    stream = await service.stream(call)
    frames = b""
    try:
        async for frame in stream.frames:
            frames += frame
    finally:
        await aclose(stream.frames)
    events = [event for event in frames.decode().split("\n\n") if event]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(event[6:]) for event in events[:-1]]
    assert all(chunk["choices"] for chunk in chunks)  # the usage chunk stayed with Portway
    assert {chunk["model"] for chunk in chunks} == {"up/stream/models/chat"}
    assert (ledger.rows[0].prompt_tokens, ledger.rows[0].completion_tokens) == (7, 6)


@pytest.mark.parametrize(
    ("endpoint", "body", "end"),
    [
        (CHAT, {"messages": [{"role": "user", "content": "hi"}]}, b"data: [DONE]"),
        (RESPONSES, {"input": "hi"}, b"event: response.completed"),
    ],
    ids=["chat", "responses"],
)
async def test_a_stream_is_on_record_before_its_end_is_sent(
    relay: tuple[RelayService, Ledger], endpoint: RelayEndpoint, body: dict[str, Any], end: bytes
) -> None:
    service, ledger = relay
    raw = _raw(**body, stream=True)
    call = service.accept(_ctx(endpoint.name), _entry_of(service, "chat"), raw, endpoint)
    stream = await service.stream(call)
    rows_when_sent = []
    try:
        async for frame in stream.frames:
            rows_when_sent.append((end in frame, len(ledger.rows)))
    finally:
        await aclose(stream.frames)
    assert (True, 1) in rows_when_sent
    assert len(ledger.rows) == 1
    assert ledger.rows[0].status == "completed"


def _hosted(name: str, kind: str, fallbacks: list[str]) -> ModelEntry:
    spec = OpenAISpec.model_validate(
        {
            "user": "up",
            "app": "fb",
            "model": name,
            "backend": "openai",
            "kind": kind,
            "base_url": "http://127.0.0.1:9/v1",
            "upstream_model": name,
            "fallbacks": fallbacks,
        }
    )
    return ModelEntry(ModelRef("up", "fb", name), "0" * 32, upstream_backend(spec))


@pytest.mark.parametrize(
    ("kind", "fallback", "problem"),
    [
        ("chat", "up/local/models/scripted", None),
        ("embedding", "up/local/models/scripted", "is a chat model"),
        ("chat", "up/local/models/missing", "is not in the catalogue"),
    ],
)
async def test_fallbacks_may_be_local_models_of_the_same_kind(
    kind: str, fallback: str, problem: str | None
) -> None:
    local = ModelEntry(ModelRef("up", "local", "scripted"), "1" * 32, ScriptedBackend(["x"]))
    hosted = _hosted("primary", kind, [fallback])
    service = RelayService(Registry([hosted, local]), Ledger(), open_session())
    try:
        if problem is None:
            service._check_fallbacks(hosted)
        else:
            with pytest.raises(CatalogError, match=problem):
                service._check_fallbacks(hosted)
    finally:
        await service.close()


async def test_a_backend_without_the_relays_session_opens_and_closes_its_own(
    upstream: FakeUpstream,
) -> None:
    entry = _entry(upstream, "alone", "chat", "ok")
    backend = entry.backend
    assert isinstance(backend, UpstreamBackend)
    backend.attach(None, None)
    until = asyncio.get_running_loop().time() + 10
    body = json.dumps({"model": "ok", "messages": [{"role": "user", "content": "hi"}]})
    exchange = await backend.open("/chat/completions", body.encode(), stream=False, until=until)
    reply = json.loads(await exchange.read_all(until))
    await exchange.finish(Outcome.OK)
    assert reply["choices"][0]["message"]["content"]
    await backend.close()
    assert backend._session is None
