"""Image generation through the real openai client, from a tiny random-weight Stable
Diffusion pipeline built and saved by the test."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.ledger import wait_for_rows
from tests.e2e.server import Server
from tests.schemas import validate
from tests.tiny_diffusion import build_tiny_pipeline

pytest.importorskip("diffusers")

ART = "portway/art/models/tiny-sd"
FLEETING = "portway/art/models/fleeting"
SCRIPTED = "portway/test/models/scripted"
SHORT_TTL = 2

CATALOG = """
default_model = false
default_embedding_model = false

[[models]]
user = "portway"
app = "test"
model = "scripted"
backend = "scripted"

[[models]]
user = "portway"
app = "art"
model = "tiny-sd"
backend = "diffusers"
path = "{path}"
steps = 2
guidance = 2.0
default_size = "64x64"
max_side = 256
aliases = ["tiny-sd"]

[[models]]
user = "portway"
app = "art"
model = "fleeting"
backend = "diffusers"
path = "{path}"
steps = 1
default_size = "64x64"
url_ttl = {ttl}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with two image models on one tiny pipeline, and a scripted chat model."""
    pipeline = build_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd"))
    catalog = CATALOG.format(path=pipeline, ttl=SHORT_TTL)
    running = Server(tmp_path_factory.mktemp("images"), catalog=catalog).start()
    yield running
    running.stop()


def _png_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    image.load()
    return image.size


def _post(
    server: Server, body: dict[str, Any], token: str | None = None, timeout: float = 120
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token or server.admin_token}"}
    url = server.base_url + "/v1/images/generations"
    return httpx.post(url, json=body, headers=headers, timeout=timeout)


def test_b64_json_gives_pngs_of_the_asked_size(client: openai.OpenAI) -> None:
    reply = client.images.generate(
        model=ART, prompt="a lighthouse", n=2, size="96x64", response_format="b64_json"
    )
    assert len(reply.data) == 2
    for image in reply.data:
        assert image.b64_json is not None
        assert image.url is None
        assert _png_size(base64.b64decode(image.b64_json)) == (96, 64)
    assert reply.usage is not None
    assert reply.usage.input_tokens > 0


def test_url_results_are_fetched_without_a_token(server: Server, client: openai.OpenAI) -> None:
    reply = client.images.generate(model="tiny-sd", prompt="a harbour at dusk", size="128x64")
    assert reply.data is not None
    url = reply.data[0].url
    assert url is not None
    assert url.startswith(server.base_url + "/media/")
    fetched = httpx.get(url, timeout=30)
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == "image/png"
    assert _png_size(fetched.content) == (128, 64)
    tampered = url.replace("signature=", "signature=0")
    assert httpx.get(tampered, timeout=30).status_code == 404


def test_url_is_refused_after_it_expires_and_the_file_is_removed(server: Server) -> None:
    body = _post(server, {"model": FLEETING, "prompt": "a passing ship"}).json()
    url = body["data"][0]["url"]
    assert httpx.get(url, timeout=30).status_code == 200
    stored = list((server.data_dir / "media").glob("*.png"))
    assert stored
    time.sleep(SHORT_TTL + 1.5)
    refused = httpx.get(url, timeout=30)
    assert refused.status_code == 404
    assert refused.json()["error"]["code"] == "link_expired"
    name = url.split("/media/")[1].split("?")[0]
    assert not [path for path in stored if path.name.endswith(name) and path.exists()]


def test_response_matches_openai_schema(server: Server) -> None:
    for response_format in ("url", "b64_json"):
        response = _post(
            server, {"model": ART, "prompt": "a pier", "response_format": response_format}
        )
        assert response.status_code == 200, response.text
        validate(response.json(), "ImagesResponse")


def test_each_request_writes_one_ledger_row_and_refusals_none(server: Server) -> None:
    token = server.token("iris")
    ok = _post(server, {"model": ART, "prompt": "a buoy", "n": 3, "user": "i-1"}, token)
    assert ok.status_code == 200, ok.text
    assert _post(server, {"model": ART, "prompt": "a buoy", "n": 0}, token).status_code == 400
    assert _post(server, {"model": ART, "prompt": "a", "quality": "hd"}, token).status_code == 400
    rows = wait_for_rows(server, "iris", 1)
    assert [(row.model, row.completion_tokens, row.status, row.end_user) for row in rows] == [
        (ART, 3, "completed", "i-1")
    ]
    assert rows[0].prompt_tokens == ok.json()["usage"]["input_tokens"]
    assert rows[0].endpoint == "images.generations"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"n": 0}, "n"),
        ({"n": 50}, "n"),
        ({"prompt": "x" * 1_000_000}, "prompt"),
        ({"prompt": "a tall lighthouse " * 10}, "prompt"),
        ({"size": "100x100"}, "size"),
        ({"size": "512x512"}, "size"),
        ({"size": "wide"}, "size"),
        ({"quality": "hd"}, "quality"),
        ({"style": "vivid"}, "style"),
        ({"background": "transparent"}, "background"),
        ({"output_format": "webp"}, "output_format"),
        ({"stream": True}, "stream"),
        ({"response_format": "svg"}, "response_format"),
        ({"seed": 7}, "seed"),
        ({"model": SCRIPTED}, "model"),
    ],
)
def test_bad_input_is_a_clear_400(server: Server, body: dict[str, Any], param: str) -> None:
    response = _post(server, {"model": ART, "prompt": "a port", **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert error["message"]


def test_chat_with_an_image_model_says_what_it_serves(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=ART, messages=[{"role": "user", "content": "hi"}])
    assert refused.value.code == "wrong_model_kind"
    assert "/images/generations" in refused.value.message


def test_models_show_their_kind(client: openai.OpenAI) -> None:
    kinds = {model.id: getattr(model, "kind", None) for model in client.models.list()}
    assert kinds == {ART: "image", FLEETING: "image", SCRIPTED: "chat"}


def test_a_client_that_leaves_cancels_its_generation(server: Server) -> None:
    token = server.token("jack")
    body = {"model": ART, "prompt": "a storm", "n": 10, "size": "256x256"}
    with pytest.raises(httpx.ReadTimeout):
        _post(server, body, token, timeout=0.3)
    rows = wait_for_rows(server, "jack", 1, timeout=60)
    assert [(row.status, row.completion_tokens) for row in rows] == [("cancelled", 0)]
    deadline = time.monotonic() + 60
    while "generation stopped after 1 of 2 steps" not in server.log_text():
        assert time.monotonic() < deadline, "the generation was not stopped between steps"
        time.sleep(0.2)
