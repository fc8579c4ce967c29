"""Bad input gets a clear OpenAI-shaped 4xx, the server keeps serving, nothing is written."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import GEMMA, SCRIPTED
from tests.e2e.server import Server

HELLO = [{"role": "user", "content": "hi"}]


def _post(server: Server, body: Any, *, raw: bytes | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    url = server.base_url + "/v1/chat/completions"
    if raw is not None:
        return httpx.post(url, content=raw, headers=headers, timeout=60)
    return httpx.post(url, json=body, headers=headers, timeout=60)


CASES: list[tuple[str, Any, int, str | None]] = [
    ("wrong type", {"model": SCRIPTED, "messages": "hi"}, 400, "messages"),
    ("empty messages", {"model": SCRIPTED, "messages": []}, 400, "messages"),
    (
        "unknown role",
        {"model": SCRIPTED, "messages": [{"role": "wizard", "content": "x"}]},
        400,
        "messages[0].role",
    ),
    (
        "content type",
        {"model": SCRIPTED, "messages": [{"role": "user", "content": 5}]},
        400,
        "messages[0].content",
    ),
    ("temperature", {"model": SCRIPTED, "messages": HELLO, "temperature": 3}, 400, "temperature"),
    ("n zero", {"model": SCRIPTED, "messages": HELLO, "n": 0}, 400, "n"),
    ("n hundred", {"model": SCRIPTED, "messages": HELLO, "n": 100}, 400, "n"),
    (
        "negative max_tokens",
        {"model": SCRIPTED, "messages": HELLO, "max_tokens": -1},
        400,
        "max_tokens",
    ),
    ("five stops", {"model": SCRIPTED, "messages": HELLO, "stop": list("abcde")}, 400, None),
    (
        "top_logprobs range",
        {"model": SCRIPTED, "messages": HELLO, "logprobs": True, "top_logprobs": 21},
        400,
        "top_logprobs",
    ),
    ("unknown field", {"model": SCRIPTED, "messages": HELLO, "colour": "red"}, 400, "colour"),
    ("tools not yet", {"model": SCRIPTED, "messages": HELLO, "tools": []}, 400, "tools"),
    (
        "image part",
        {
            "model": GEMMA,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}
                    ],
                }
            ],
        },
        400,
        "messages[0].content[0]",
    ),
    (
        "orphan tool result",
        {
            "model": SCRIPTED,
            "messages": [{"role": "tool", "content": "42", "tool_call_id": "call_x"}],
        },
        400,
        "messages[0].tool_call_id",
    ),
    ("path trick", {"model": "../../etc/models/passwd", "messages": HELLO}, 400, "model"),
    ("encoded path trick", {"model": "google/%2e%2e/models/x", "messages": HELLO}, 400, "model"),
    ("unknown model", {"model": "nobody/none/models/nothing", "messages": HELLO}, 404, "model"),
    ("wrong case", {"model": GEMMA.replace("gemma-3", "Gemma-3"), "messages": HELLO}, 404, "model"),
    (
        "bad logit_bias key",
        {"model": SCRIPTED, "messages": HELLO, "logit_bias": {"x": 1}},
        400,
        "logit_bias",
    ),
]


@pytest.mark.parametrize(("name", "body", "status", "param"), CASES, ids=[c[0] for c in CASES])
def test_bad_body(server: Server, name: str, body: Any, status: int, param: str | None) -> None:
    response = _post(server, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]
    assert response.headers["x-request-id"].startswith("req_")


@pytest.mark.parametrize(
    "raw", [b"{not json", b"\xff\xfe{}", b"", b"[1, 2]", b'{"model": "a", "messages": [}']
)
def test_unparseable_bodies(server: Server, raw: bytes) -> None:
    response = _post(server, None, raw=raw)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_oversized_body_is_413(server: Server) -> None:
    big = {"model": SCRIPTED, "messages": [{"role": "user", "content": "x" * (10 * 1024 * 1024)}]}
    response = _post(server, big)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_prompt_longer_than_context(client: openai.OpenAI) -> None:
    long_text = "lorem ipsum dolor " * 8000
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=GEMMA, messages=[{"role": "user", "content": long_text}], max_tokens=4
        )
    assert caught.value.code == "context_length_exceeded"


def test_unknown_route_and_method(server: Server) -> None:
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    missing = httpx.get(server.base_url + "/v1/nothing-here", headers=headers)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong = httpx.delete(server.base_url + "/v1/chat/completions", headers=headers)
    assert wrong.status_code == 405
    assert wrong.json()["error"]["type"] == "invalid_request_error"


def test_refused_requests_write_no_usage(server: Server) -> None:
    token = server.token("frank")
    headers = {"Authorization": f"Bearer {token}"}
    url = server.base_url + "/v1/chat/completions"
    for body in ({"model": SCRIPTED, "messages": []}, {"model": "x/y/models/z", "messages": HELLO}):
        assert httpx.post(url, json=body, headers=headers).status_code >= 400
    time.sleep(1.5)
    assert "frank" not in server.cli("usage", "--user", "frank").stdout


def test_server_still_serves(client: openai.OpenAI) -> None:
    assert client.chat.completions.create(model=SCRIPTED, messages=HELLO).choices
