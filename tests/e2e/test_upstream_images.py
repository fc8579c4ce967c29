"""Upstream image and embedding models through a real ``portway serve`` and the real
``openai`` client, against the fake upstream (tests/upstream_fake.py), which serves
the PNGs its image URLs point at: passed through as they come, or re-hosted on
Portway's own signed, expiring links (``rehost_images = true``)."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import openai
import pydantic
import pytest

from tests.e2e.ledger import wait_for_rows
from tests.e2e.server import Server
from tests.upstreams import FakeUpstream

pytest.importorskip("PIL")

REVISED = "A revised prompt, from the fake upstream."
FAULTS = ["picture-missing", "picture-unreachable", "picture-ftp", "picture-html"]


def _entry(model: str, kind: str, upstream: str, base: str, extra: str = "") -> str:
    return (
        f'[[models]]\nuser = "up"\napp = "media"\nmodel = "{model}"\nbackend = "openai"\n'
        f'kind = "{kind}"\nbase_url = "{base}"\nupstream_model = "{upstream}"\n'
        "timeouts = { connect = 2, first_byte = 5, idle = 5, total = 10 }\n"
        "retries = { max_attempts = 2, backoff_base = 0.05, backoff_cap = 0.1 }\n"
        f"{extra}\n"
    )


def _catalog(base: str) -> str:
    rehost = 'rehost_images = true\nurl_ttl = 60\nrehost_allowed_networks = ["127.0.0.0/8"]\n'
    text = "default_model = false\ndefault_embedding_model = false\n\n"
    text += _entry("pass", "image", "picture", base)
    text += _entry("rehost", "image", "picture", base, rehost)
    text += _entry("rehost-public-only", "image", "picture", base, "rehost_images = true\n")
    text += _entry("embed", "embedding", "embed-up", base)
    text += "".join(_entry(fault, "image", fault, base, rehost) for fault in FAULTS)
    text += _entry("stream-break", "image", "picture-stream-break", base)
    return text


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeUpstream]:
    fake = FakeUpstream(tmp_path_factory.mktemp("fake-upstream"), "media").start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def portway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[Server]:
    server = Server(
        tmp_path_factory.mktemp("portway-upstream-images"), catalog=_catalog(upstream.base_url)
    )
    yield server.start()
    server.stop()


@pytest.fixture(scope="module")
def client(portway: Server) -> openai.OpenAI:
    token = portway.token("painter")
    return openai.OpenAI(
        base_url=portway.base_url + "/v1", api_key=token, max_retries=0, timeout=30
    )


def _model(name: str) -> str:
    return f"up/media/models/{name}"


def _picture(upstream: FakeUpstream) -> bytes:
    """The PNG the fake upstream serves, fetched from it directly."""
    response = httpx.get(f"http://127.0.0.1:{upstream.port}/files/picture.png")
    response.raise_for_status()
    return response.content


def _fetches(upstream: FakeUpstream) -> int:
    found: int = upstream.stats()["paths"].get("/files/picture.png", 0)
    return found


def test_pass_through_keeps_the_upstream_url_and_revised_prompt(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    before = _fetches(upstream)
    result = client.images.generate(model=_model("pass"), prompt="a lighthouse", n=2)
    assert result.data is not None and len(result.data) == 2
    for image in result.data:
        assert image.url == f"http://127.0.0.1:{upstream.port}/files/picture.png"
        assert image.revised_prompt == REVISED
    assert _fetches(upstream) == before  # Portway never fetched it


def test_rehost_serves_the_same_png_from_portway_without_a_token(
    client: openai.OpenAI, portway: Server, upstream: FakeUpstream
) -> None:
    result = client.images.generate(model=_model("rehost"), prompt="a lighthouse", n=2)
    assert result.data is not None and len(result.data) == 2
    urls = [image.url or "" for image in result.data]
    assert len(set(urls)) == 2
    for url, image in zip(urls, result.data, strict=True):
        assert url.startswith(portway.base_url + "/media/"), url
        assert "signature=" in url and "expires=" in url
        assert image.revised_prompt == REVISED
        fetched = httpx.get(url)  # no Authorization header
        assert fetched.status_code == 200
        assert fetched.headers["content-type"] == "image/png"
        assert fetched.content == _picture(upstream)
    tampered = urls[0].replace("signature=", "signature=0")
    assert httpx.get(tampered).status_code == 404


def test_rehost_keeps_b64_json_as_it_comes(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    result = client.images.generate(
        model=_model("rehost"), prompt="a lighthouse", response_format="b64_json"
    )
    assert result.data is not None
    assert result.data[0].url is None
    assert base64.b64decode(result.data[0].b64_json or "") == _picture(upstream)
    assert result.data[0].revised_prompt == REVISED


@pytest.mark.parametrize("fault", FAULTS)
def test_an_image_that_cannot_be_fetched_is_a_502(
    portway: Server, upstream: FakeUpstream, fault: str
) -> None:
    user = f"painter-{fault}"
    client = openai.OpenAI(
        base_url=portway.base_url + "/v1", api_key=portway.token(user), max_retries=0, timeout=30
    )
    calls = upstream.stats()["calls"].get(fault, 0)
    with pytest.raises(openai.APIStatusError) as caught:
        client.images.generate(model=_model(fault), prompt="a lighthouse")
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_error"
    assert caught.value.type == "server_error"
    assert "127.0.0.1" not in str(caught.value.message)  # the provider's URL stays private
    assert upstream.stats()["calls"][fault] == calls + 1  # the generation is not repeated
    rows = wait_for_rows(portway, user, 1)
    assert [(row.status, row.error_code) for row in rows] == [("failed", "upstream_error")]
    assert rows[0].model == _model(fault)
    assert rows[0].endpoint == "images.generations"


def test_rehost_refuses_a_loopback_image_url_without_the_catalogue_allowing_it(
    portway: Server, upstream: FakeUpstream
) -> None:
    before = _fetches(upstream)
    user = "painter-public-only"
    client = openai.OpenAI(
        base_url=portway.base_url + "/v1", api_key=portway.token(user), max_retries=0, timeout=30
    )
    with pytest.raises(openai.APIStatusError) as caught:
        client.images.generate(model=_model("rehost-public-only"), prompt="a lighthouse")
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_error"
    assert caught.value.message.endswith(  # Portway's words only: no status, no exception
        "502 - An image of 'up/media/models/rehost-public-only' "
        "could not be fetched from its upstream."
    )
    assert _fetches(upstream) == before  # Portway never connected to it
    rows = wait_for_rows(portway, user, 1)
    assert [(row.status, row.error_code) for row in rows] == [("failed", "upstream_error")]


def test_upstream_embeddings_pass_through_with_the_model_renamed(
    client: openai.OpenAI,
) -> None:
    result = client.embeddings.create(model=_model("embed"), input=["a port", "a ship"])
    assert result.model == _model("embed")
    assert [item.embedding for item in result.data] == [[0.1, 0.2, 0.3]] * 2
    assert [item.index for item in result.data] == [0, 1]
    assert result.usage.prompt_tokens == 6


def _client_of(portway: Server, user: str) -> openai.OpenAI:
    token = portway.token(user)
    return openai.OpenAI(base_url=portway.base_url + "/v1", api_key=token, max_retries=0)


def test_image_streams_are_relayed(portway: Server) -> None:
    stream = _client_of(portway, "streamed-painter").images.generate(
        model=_model("pass"), prompt="a lighthouse", stream=True, partial_images=2
    )
    events = list(stream)
    assert [event.type for event in events] == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    assert [getattr(event, "partial_image_index", None) for event in events[:2]] == [0, 1]
    for event in events:
        assert base64.b64decode(event.b64_json).startswith(b"\x89PNG")
    completed = events[-1]
    assert completed.type == "image_generation.completed"
    assert (completed.usage.input_tokens, completed.usage.output_tokens) == (40, 60)
    rows = wait_for_rows(portway, "streamed-painter", 1)
    assert [(row.prompt_tokens, row.completion_tokens, row.status) for row in rows] == [
        (40, 60, "completed")
    ]


def test_image_stream_usage_is_summed_over_the_images(portway: Server) -> None:
    client = _client_of(portway, "two-pictures")
    events = list(client.images.generate(model=_model("pass"), prompt="x", n=2, stream=True))
    assert [event.type for event in events] == ["image_generation.completed"] * 2
    rows = wait_for_rows(portway, "two-pictures", 1)
    assert [(row.prompt_tokens, row.completion_tokens, row.status) for row in rows] == [
        (80, 120, "completed")
    ]


def test_a_broken_image_stream_ends_with_an_error_event(portway: Server) -> None:
    stream = _client_of(portway, "broken-picture").images.generate(
        model=_model("stream-break"), prompt="x", stream=True, partial_images=1
    )
    seen: list[str] = []

    def read_all() -> None:
        seen.extend(event.type for event in stream)

    with pytest.raises(openai.APIError, match=r"broke off|before an image"):
        read_all()
    assert seen == ["image_generation.partial_image"]
    rows = wait_for_rows(portway, "broken-picture", 1)
    assert [(row.status, row.error_code) for row in rows] == [("failed", "upstream_error")]


def test_image_stream_events_match_openais_schema(portway: Server) -> None:
    headers = {"Authorization": f"Bearer {portway.token('schema-painter')}"}
    body = {"model": _model("pass"), "prompt": "x", "stream": True, "partial_images": 1}
    with httpx.stream(
        "POST", portway.base_url + "/v1/images/generations", json=body, headers=headers
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    frames = [frame for frame in text.split("\n\n") if frame]
    names = [frame.split("\n")[0] for frame in frames]
    assert names == ["event: image_generation.partial_image", "event: image_generation.completed"]
    for frame in frames:
        event = openai.types.ImageGenStreamEvent  # the client's own union of both events
        data = frame.split("\n", 1)[1].removeprefix("data: ")
        parsed = pydantic.TypeAdapter(event).validate_json(data)
        assert parsed.type == frame.split("\n")[0].removeprefix("event: ")
