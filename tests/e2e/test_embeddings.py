"""Embeddings from the embedded all-MiniLM-L6-v2 through the real openai client."""

from __future__ import annotations

import base64
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from tests.e2e.ledger import wait_for_rows
from tests.e2e.server import Server
from tests.schemas import validate

pytest.importorskip("sentence_transformers")

MINILM = "sentence-transformers/embed/models/all-MiniLM-L6-v2"
SCRIPTED = "portway/test/models/scripted"

CATALOG = """
default_model = false

[[models]]
user = "portway"
app = "test"
model = "scripted"
backend = "scripted"
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with the default embedding model and a scripted chat model; no Gemma."""
    running = Server(tmp_path_factory.mktemp("embeddings"), catalog=CATALOG).start()
    yield running
    running.stop()


def _embed(client: openai.OpenAI, text: str | list[str], **options: Any) -> list[list[float]]:
    reply = client.embeddings.create(model=MINILM, input=text, **options)
    return [item.embedding for item in reply.data]


def _cosine(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def _post(server: Server, body: dict[str, Any], token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token or server.admin_token}"}
    return httpx.post(server.base_url + "/v1/embeddings", json=body, headers=headers, timeout=120)


def test_the_same_text_gives_the_same_vector(client: openai.OpenAI) -> None:
    first = _embed(client, "Ships wait outside the harbour.", encoding_format="float")[0]
    second = _embed(client, "Ships wait outside the harbour.", encoding_format="float")[0]
    assert len(first) == 384
    assert first == second
    assert math.isclose(float(np.linalg.norm(first)), 1.0, abs_tol=1e-5)


def test_related_texts_are_closer_than_unrelated_ones(client: openai.OpenAI) -> None:
    port, ship, cake = _embed(
        client,
        [
            "A container ship docks at the port.",
            "Cargo vessels unload in the harbour.",
            "I baked a chocolate cake.",
        ],
    )
    assert _cosine(port, ship) > _cosine(port, cake) + 0.2


def test_base64_decodes_to_the_float_result(server: Server, client: openai.OpenAI) -> None:
    text = "Base64 is just float32 bytes."
    floats = _embed(client, text, encoding_format="float")[0]
    raw = _post(server, {"model": MINILM, "input": text, "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert decoded.tolist() == floats
    # The openai client asks for base64 unless told otherwise, and decodes it itself.
    assert _embed(client, text)[0] == floats


def test_dimensions_shorten_and_renormalise(client: openai.OpenAI) -> None:
    text = "Shorter vectors, same direction."
    full = np.array(_embed(client, text, encoding_format="float")[0])
    short = np.array(_embed(client, text, dimensions=64, encoding_format="float")[0])
    assert short.shape == (64,)
    assert math.isclose(float(np.linalg.norm(short)), 1.0, abs_tol=1e-5)
    expected = full[:64] / np.linalg.norm(full[:64])
    assert np.allclose(short, expected, atol=1e-6)


def test_batches_give_the_same_vectors_as_single_calls(client: openai.OpenAI) -> None:
    texts = ["one", "a somewhat longer sentence about lighthouses", "three", "vier", "5"]
    batched = _embed(client, texts, encoding_format="float")
    for text, vector in zip(texts, batched, strict=True):
        assert _cosine(_embed(client, text, encoding_format="float")[0], vector) > 0.99999


def test_concurrent_requests_are_answered_each_with_its_own_vector(client: openai.OpenAI) -> None:
    texts = [f"request number {i} about ports" for i in range(24)]
    singles = {text: _embed(client, text, encoding_format="float")[0] for text in texts[:4]}
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(lambda text: _embed(client, text, encoding_format="float")[0], texts)
        )
    for text, vector in zip(texts[:4], results, strict=False):
        assert _cosine(singles[text], vector) > 0.99999
    assert len({tuple(vector) for vector in results}) == len(texts)


def test_token_ids_embed_like_their_text(client: openai.OpenAI) -> None:
    hello_world = [7592, 2088]  # "hello world" in MiniLM's WordPiece vocabulary
    from_ids = _embed(client, [hello_world], encoding_format="float")[0]  # type: ignore[list-item]
    from_text = _embed(client, "hello world", encoding_format="float")[0]
    assert _cosine(from_ids, from_text) > 0.99999


def test_response_matches_openai_schema_and_usage(server: Server) -> None:
    body = _post(server, {"model": MINILM, "input": ["hello world", "hi"]}).json()
    validate(body, "CreateEmbeddingResponse")
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    assert body["model"] == MINILM


def test_each_request_writes_one_ledger_row_and_refusals_none(server: Server) -> None:
    token = server.token("erin")
    assert _post(
        server, {"model": MINILM, "input": ["hello world"], "user": "e-1"}, token
    ).is_success
    assert _post(server, {"model": MINILM, "input": []}, token).status_code == 400
    assert _post(server, {"model": MINILM, "input": "word " * 300}, token).status_code == 400
    rows = wait_for_rows(server, "erin", 1)
    assert [(row.model, row.prompt_tokens, row.status, row.end_user) for row in rows] == [
        (MINILM, 2, "completed", "e-1")
    ]
    assert rows[0].endpoint == "embeddings"


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"input": []}, "input", "invalid_value"),
        ({"input": ["x"] * 10_000}, "input", "invalid_value"),
        ({"input": ""}, "input", "invalid_value"),
        ({"input": [[1, 2, 99_999]]}, "input", "invalid_value"),
        ({"input": [-1]}, "input", "invalid_value"),
        ({"input": "port " * 300}, "input", "context_length_exceeded"),
        ({"input": "a", "dimensions": 385}, "dimensions", "invalid_value"),
        ({"input": "a", "dimensions": 0}, "dimensions", "invalid_value"),
        ({"input": "a", "encoding_format": "int8"}, "encoding_format", "invalid_value"),
        ({"input": "a", "truncate": True}, "truncate", None),
        ({"input": "a", "model": SCRIPTED}, "model", "wrong_model_kind"),
    ],
)
def test_bad_input_is_a_clear_400(
    server: Server, body: dict[str, Any], param: str, code: str | None
) -> None:
    response = _post(server, {"model": MINILM, **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, code)
    assert error["message"]


def test_chat_with_the_embedding_model_says_what_it_serves(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=MINILM, messages=[{"role": "user", "content": "hi"}])
    assert refused.value.code == "wrong_model_kind"
    assert "/embeddings" in refused.value.message


def test_models_show_their_kind(client: openai.OpenAI) -> None:
    kinds = {model.id: getattr(model, "kind", None) for model in client.models.list()}
    assert kinds == {MINILM: "embedding", SCRIPTED: "chat"}
    assert client.models.retrieve("all-MiniLM-L6-v2").id == MINILM
