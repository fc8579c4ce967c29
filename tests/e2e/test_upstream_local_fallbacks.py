"""Hosted models whose fallbacks name local models: when every hosted model of
the chain fails before its first byte, the local model serves the request through
the normal serving layer, in OpenAI's shapes, and the ledger has one row for the
model that ran. A client's own error (an upstream 400) never falls back."""

from __future__ import annotations

import base64
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.e2e.ledger import wait_for_rows
from tests.e2e.server import Server, free_port
from tests.upstreams import FakeUpstream

HELLO = [{"role": "user", "content": "hi"}]
SCRIPT = ["Served", " locally", "."]
LOCAL = "fb/local/models/scripted"
MINILM = "sentence-transformers/embed/models/all-MiniLM-L6-v2"
HAS_MINILM = importlib.util.find_spec("sentence_transformers") is not None
HAS_DIFFUSERS = importlib.util.find_spec("diffusers") is not None
PAINTER = "fb/local/models/tiny-sd"
FAST = (
    "timeouts = { connect = 2, first_byte = 2, idle = 1, total = 4 }\n"
    "retries = { max_attempts = 2, backoff_base = 0.05, backoff_cap = 0.1 }\n"
)


def _hosted(model: str, upstream: str, base: str, fallbacks: list[str], kind: str = "chat") -> str:
    names = ", ".join(f'"{name}"' for name in fallbacks)
    return (
        f'[[models]]\nuser = "fb"\napp = "hosted"\nmodel = "{model}"\nbackend = "openai"\n'
        f'kind = "{kind}"\nbase_url = "{base}"\nupstream_model = "{upstream}"\n'
        f"fallbacks = [{names}]\n{FAST}\n"
    )


def _painter(pipeline: Path) -> str:
    """A local image model on the tests' tiny random-weight pipeline."""
    return (
        '[[models]]\nuser = "fb"\napp = "local"\nmodel = "tiny-sd"\nbackend = "diffusers"\n'
        f'path = "{pipeline}"\nsteps = 1\ndefault_size = "64x64"\n\n'
    )


def _catalog(fake: FakeUpstream, pipeline: Path | None) -> str:
    script = ", ".join(f'"{piece}"' for piece in SCRIPT)
    text = "default_model = false\n"
    text += f"default_embedding_model = {'true' if HAS_MINILM else 'false'}\n\n"
    text += '[[models]]\nuser = "fb"\napp = "local"\nmodel = "scripted"\nbackend = "scripted"\n'
    text += f"script = [{script}]\n\n"
    text += _hosted("also-down", "status-500", fake.base_url, [])
    text += _hosted("down", "status-503", fake.base_url, ["fb/hosted/models/also-down", LOCAL])
    text += _hosted("refuses", "status-400", fake.base_url, [LOCAL])
    nowhere = f"http://127.0.0.1:{free_port()}/v1"  # connection refused
    if HAS_MINILM:
        text += _hosted("embed", "embed-up", nowhere, [MINILM], kind="embedding")
    if pipeline is not None:
        text += _painter(pipeline)
        text += _hosted("paint", "paint-up", nowhere, [PAINTER], kind="image")
    return text


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeUpstream]:
    upstream = FakeUpstream(tmp_path_factory.mktemp("fake-upstream")).start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def portway(tmp_path_factory: pytest.TempPathFactory, fake: FakeUpstream) -> Iterator[Server]:
    pipeline = None
    if HAS_DIFFUSERS:
        from tests.tiny_diffusion import build_tiny_pipeline

        pipeline = build_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd"))
    catalog = _catalog(fake, pipeline)
    server = Server(tmp_path_factory.mktemp("portway-local-fallbacks"), catalog=catalog)
    yield server.start()
    server.stop()


def _client(portway: Server, user: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=portway.base_url + "/v1", api_key=portway.token(user), max_retries=0
    )


def test_unary_chat_is_served_by_the_local_fallback(portway: Server, fake: FakeUpstream) -> None:
    before = fake.stats()["calls"]
    reply = _client(portway, "fb-unary").chat.completions.create(
        model="fb/hosted/models/down", messages=HELLO
    )
    assert reply.model == LOCAL  # the model that answered, as for hosted fallbacks
    assert reply.choices[0].message.content == "".join(SCRIPT)
    assert reply.usage is not None and reply.usage.completion_tokens == len(SCRIPT)
    calls = fake.stats()["calls"]
    for upstream in ("status-503", "status-500"):  # each tried with its retries first
        assert calls.get(upstream, 0) - before.get(upstream, 0) == 2
    rows = wait_for_rows(portway, "fb-unary", 1)
    assert [(row.model, row.status, row.completion_tokens) for row in rows] == [
        (LOCAL, "completed", len(SCRIPT))
    ]


def test_streamed_chat_is_served_by_the_local_fallback(portway: Server) -> None:
    stream = _client(portway, "fb-stream").chat.completions.create(
        model="fb/hosted/models/down",
        messages=HELLO,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert {chunk.model for chunk in chunks} == {LOCAL}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(SCRIPT)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == len(SCRIPT)
    rows = wait_for_rows(portway, "fb-stream", 1)
    assert [(row.model, row.status) for row in rows] == [(LOCAL, "completed")]


def test_responses_are_served_by_the_local_fallback(portway: Server) -> None:
    response = _client(portway, "fb-responses").responses.create(
        model="fb/hosted/models/down", input="hi"
    )
    assert response.model == LOCAL
    assert response.output_text == "".join(SCRIPT)
    rows = wait_for_rows(portway, "fb-responses", 1)
    assert [(row.model, row.endpoint) for row in rows] == [(LOCAL, "responses")]


def test_the_clients_own_error_does_not_fall_back(portway: Server) -> None:
    with pytest.raises(openai.BadRequestError):
        _client(portway, "fb-refused").chat.completions.create(
            model="fb/hosted/models/refuses", messages=HELLO
        )
    rows = wait_for_rows(portway, "fb-refused", 1)
    assert [(row.model, row.status) for row in rows] == [("fb/hosted/models/refuses", "failed")]


@pytest.mark.skipif(not HAS_MINILM, reason="sentence-transformers is not installed")
def test_embeddings_are_served_by_the_local_fallback(portway: Server) -> None:
    reply = _client(portway, "fb-embed").embeddings.create(
        model="fb/hosted/models/embed", input=["one", "two"]
    )
    assert reply.model == MINILM
    assert [len(item.embedding) for item in reply.data] == [384, 384]
    rows = wait_for_rows(portway, "fb-embed", 1)
    assert [(row.model, row.status) for row in rows] == [(MINILM, "completed")]


@pytest.mark.skipif(not HAS_DIFFUSERS, reason="diffusers is not installed")
def test_images_are_served_by_the_local_fallback(portway: Server) -> None:
    reply = _client(portway, "fb-paint").images.generate(
        model="fb/hosted/models/paint", prompt="a harbour", response_format="b64_json"
    )
    assert reply.data is not None and len(reply.data) == 1
    assert base64.b64decode(reply.data[0].b64_json or "").startswith(b"\x89PNG")
    rows = wait_for_rows(portway, "fb-paint", 1)
    assert [(row.model, row.status) for row in rows] == [(PAINTER, "completed")]
