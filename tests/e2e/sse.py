"""Read a raw server-sent event stream the way a strict client would."""

from __future__ import annotations

import json
from typing import Any

import httpx


def raw_events(base_url: str, token: str, body: dict[str, Any]) -> list[str]:
    """The ``data:`` payloads of one streamed request, checking the framing."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.stream(
        "POST", base_url + "/v1/chat/completions", json=body, headers=headers, timeout=120
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode("utf-8")
    assert text.endswith("\n\n"), "every event ends with a blank line"
    events = text[:-2].split("\n\n")
    for event in events:
        assert event.startswith("data: "), event
        assert "\n" not in event, "one data line per event"
    return [event[len("data: ") :] for event in events]


def chunks(events: list[str]) -> list[dict[str, Any]]:
    assert events[-1] == "[DONE]"
    return [json.loads(event) for event in events[:-1]]


def check_grammar(parsed: list[dict[str, Any]], *, choices: int, include_usage: bool) -> None:
    """OpenAI's stream grammar, as the issue states it."""
    ids = {chunk["id"] for chunk in parsed}
    assert len(ids) == 1
    assert ids.pop().startswith("chatcmpl-")
    body = parsed[:-1] if include_usage else parsed
    for chunk in parsed:
        assert chunk["object"] == "chat.completion.chunk"
        assert ("usage" in chunk) == include_usage
    if include_usage:
        assert parsed[-1]["choices"] == []
        assert parsed[-1]["usage"]["total_tokens"] > 0
        assert all(chunk["usage"] is None for chunk in body)
    for index in range(choices):
        mine = [c["choices"][0] for c in body if c["choices"] and c["choices"][0]["index"] == index]
        assert mine[0]["delta"].get("role") == "assistant"
        assert all(choice["finish_reason"] is None for choice in mine[:-1])
        assert mine[-1]["finish_reason"] in ("stop", "length")
