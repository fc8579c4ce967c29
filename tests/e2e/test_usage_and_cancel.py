"""The usage ledger, and a client that walks away mid-stream."""

from __future__ import annotations

import httpx
import openai

from tests.e2e.conftest import GEMMA, SCRIPTED
from tests.e2e.ledger import wait_for_rows
from tests.e2e.server import Server

HELLO = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}]


def test_usage_rows_for_each_generation(server: Server) -> None:
    token = server.token("gina")
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=token, max_retries=0)
    reply = client.chat.completions.create(model=GEMMA, messages=HELLO, max_tokens=4, user="end-42")
    stream = client.chat.completions.create(model=SCRIPTED, messages=HELLO, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    rows = wait_for_rows(server, "gina", 2)
    assert len(rows) == 2
    first = next(row for row in rows if row.model == GEMMA)
    assert reply.usage is not None
    assert first.prompt_tokens == reply.usage.prompt_tokens
    assert first.completion_tokens == reply.usage.completion_tokens == 4
    assert first.status == "completed"
    assert first.end_user == "end-42"
    assert first.version_id
    assert len(first.version_id) == 32
    assert first.token_id
    assert first.token_id.startswith("tok_")
    assert first.ended_at >= first.started_at
    summary = server.cli("usage", "--user", "gina").stdout
    assert GEMMA in summary
    assert SCRIPTED in summary


def test_disconnect_mid_stream_cancels_and_frees_the_model(server: Server) -> None:
    token = server.token("hank")
    body = {
        "model": GEMMA,
        "messages": HELLO,
        "max_tokens": 4000,
        "stream": True,
        "temperature": 1.0,
        "logit_bias": {"1": -100, "106": -100, "212": -100},  # Gemma's end tokens
    }
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.stream(
        "POST", server.base_url + "/v1/chat/completions", json=body, headers=headers, timeout=60
    ) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        received = [next(lines) for _ in range(8)]
    assert any(line.startswith("data: ") for line in received)
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=token, max_retries=0)
    after = client.chat.completions.create(
        model=GEMMA, messages=HELLO, max_tokens=3, logit_bias=body["logit_bias"]
    )
    assert after.choices[0].finish_reason == "length"
    rows = wait_for_rows(server, "hank", 2)
    cancelled = [row for row in rows if row.status == "cancelled"]
    assert len(cancelled) == 1
    assert 0 < cancelled[0].completion_tokens < 4000
