"""Bad input gets a clear OpenAI-shaped 4xx, the server keeps serving, nothing is written."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import GEMMA, SCRIPTED
from tests.e2e.ledger import wait_for_rows
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
    ("five stops", {"model": SCRIPTED, "messages": HELLO, "stop": list("abcde")}, 400, "stop"),
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
    # The ledger is written in order: once a later request's row is in, any of theirs is.
    later = {"Authorization": f"Bearer {server.token('frank-witness')}"}
    body = {"model": SCRIPTED, "messages": HELLO}
    assert httpx.post(url, json=body, headers=later).status_code == 200
    assert wait_for_rows(server, "frank-witness", 1)
    assert "frank" not in server.cli("usage", "--user", "frank").stdout


def test_server_still_serves(client: openai.OpenAI) -> None:
    assert client.chat.completions.create(model=SCRIPTED, messages=HELLO).choices


# ------------------------------------------------------------------ bounds, on both APIs


def _deep(levels: int) -> dict[str, Any]:
    """A schema of arrays of arrays... whose JSON nests ``levels`` objects deep."""
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels - 1):
        schema = {"type": "array", "items": schema}
    return {"type": "object", "properties": {"a": schema}}


def _wide(properties: int, prefix: str = "p") -> dict[str, Any]:
    """An object schema of ``properties`` string properties, about 60 bytes each."""
    props = {f"{prefix}{n}": {"type": "string", "description": "d" * 20} for n in range(properties)}
    return {"type": "object", "properties": props}


def _tool(api: str, parameters: Any, name: str = "f") -> dict[str, Any]:
    if api == "chat":
        return {"type": "function", "function": {"name": name, "parameters": parameters}}
    return {"type": "function", "name": name, "parameters": parameters}


def _body(api: str, **fields: Any) -> dict[str, Any]:
    if api == "chat":
        return {"model": SCRIPTED, "messages": HELLO, **fields}
    return {"model": SCRIPTED, "input": "hi", **fields}


def _parameters(api: str, index: int = 0) -> str:
    return f"tools[{index}].function.parameters" if api == "chat" else f"tools[{index}].parameters"


PATHS = {"chat": "/v1/chat/completions", "responses": "/v1/responses"}

BOUNDS: list[tuple[str, Callable[[str], dict[str, Any]], Callable[[str], str]]] = [
    (
        "parameters 190 deep",
        lambda api: _body(api, tools=[_tool(api, _deep(190))]),
        _parameters,
    ),
    (
        "parameters over 64 KiB",
        lambda api: _body(api, tools=[_tool(api, {}), _tool(api, _wide(1500), "g")]),
        lambda api: _parameters(api, 1),
    ),
    (
        "128 tools of 6.5 MB",
        lambda api: _body(
            api, tools=[_tool(api, _wide(900, f"t{n}_"), f"f{n}") for n in range(128)]
        ),
        lambda api: "tools",
    ),
    (
        "129 tools",
        lambda api: _body(api, tools=[_tool(api, {}, f"f{n}") for n in range(129)]),
        lambda api: "tools",
    ),
    (
        "NaN in parameters",
        lambda api: _body(api, tools=[_tool(api, {"type": "object", "default": math.nan})]),
        _parameters,
    ),
    ("Infinity in top_p", lambda api: _body(api, top_p=math.inf), lambda api: "top_p"),
]


def _no_traceback_since(server: Server, offset: int) -> None:
    logged = server.log_text()[offset:]
    assert "Traceback" not in logged and "RecursionError" not in logged, logged[-3000:]


@pytest.mark.parametrize("api", ["chat", "responses"])
@pytest.mark.parametrize(("name", "body", "param"), BOUNDS, ids=[c[0] for c in BOUNDS])
def test_bounds_are_400s_naming_the_field(
    server: Server,
    api: str,
    name: str,
    body: Callable[[str], dict[str, Any]],
    param: Callable[[str], str],
) -> None:
    logged = len(server.log_text())
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    raw = json.dumps(body(api), separators=(",", ":")).encode()  # NaN, Infinity as Python writes
    response = httpx.post(server.base_url + PATHS[api], content=raw, headers=headers, timeout=120)
    assert response.status_code == 400, response.text[:2000]
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param(api), error
    assert httpx.get(server.base_url + "/health", timeout=60).status_code == 200
    _no_traceback_since(server, logged)


CHAT_BOUNDS = [
    ("stop of 1 MB", {"stop": "x" * 1_000_000}, "stop"),
    ("stop list with a long one", {"stop": ["a", "x" * 1025]}, "stop"),
    ("10,000 logit_bias keys", {"logit_bias": {str(n): 1 for n in range(10_000)}}, "logit_bias"),
    (
        "response format 40 deep",
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "deep", "schema": _deep(40)},
            }
        },
        "response_format.json_schema.schema",
    ),
]


@pytest.mark.parametrize(("name", "fields", "param"), CHAT_BOUNDS, ids=[c[0] for c in CHAT_BOUNDS])
def test_chat_bounds_with_the_openai_client(
    server: Server, client: openai.OpenAI, name: str, fields: dict[str, Any], param: str
) -> None:
    logged = len(server.log_text())
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=GEMMA, messages=HELLO, max_tokens=1, **fields)
    assert caught.value.param == param
    _no_traceback_since(server, logged)


def test_responses_schema_bound_with_the_openai_client(
    server: Server, client: openai.OpenAI
) -> None:
    logged = len(server.log_text())
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(
            model=SCRIPTED,
            input="hi",
            text={"format": {"type": "json_schema", "name": "deep", "schema": _deep(40)}},
        )
    assert caught.value.param == "text.format.schema"
    _no_traceback_since(server, logged)


def test_nan_anywhere_is_refused(server: Server) -> None:
    message = b'{"role": "assistant", "content": "x", "annotations": [NaN]}'
    raw = b'{"model": "%s", "messages": [%s]}' % (SCRIPTED.encode(), message)
    response = _post(server, None, raw=raw)
    assert response.status_code == 400
    assert "NaN" in response.json()["error"]["message"]


def test_bounds_admit_their_limits(client: openai.OpenAI) -> None:
    tools = [_tool("chat", _deep(30), f"f{n}") for n in range(128)]  # 32 levels each
    reply = client.chat.completions.create(
        model=SCRIPTED,
        messages=HELLO,
        tools=tools,
        stop=["x" * 1024] * 4,
    )
    assert reply.choices
    biased = client.chat.completions.create(
        model=GEMMA, messages=HELLO, max_tokens=1, logit_bias={str(n): 1 for n in range(1024)}
    )
    assert biased.choices
