"""The chat wire protocol through the real openai client, on the scripted model
(fast, exact text) and on the real Gemma model."""

from __future__ import annotations

import openai
import pytest

from tests.e2e.conftest import GEMMA, SCRIPTED
from tests.e2e.server import Server
from tests.e2e.sse import check_grammar, chunks, raw_events
from tests.schemas import validate

HELLO = [{"role": "user", "content": "Say hello."}]
NO_END = {"1": -100, "106": -100, "212": -100}
"""Gemma's end-of-generation tokens forbidden: only max_tokens or a stop string ends
a reply (what the model writes differs between CPUs; tests must not depend on it)."""
FORCED = {**NO_END, "506": 100}
"""Under this bias Gemma writes " the" (token 506) at every step."""


def test_unary_scripted_exact_body(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=SCRIPTED, messages=HELLO)
    assert reply.id.startswith("chatcmpl-")
    assert reply.object == "chat.completion"
    assert reply.model == SCRIPTED
    assert reply.choices[0].message.content == "Hello from Portway."
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 4
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 4
    validate(reply.model_dump(mode="json", exclude_unset=True), "CreateChatCompletionResponse")


def test_stream_grammar_raw_bytes(server: Server) -> None:
    body = {"model": SCRIPTED, "messages": HELLO, "stream": True}
    parsed = chunks(raw_events(server.base_url, server.admin_token, body))
    check_grammar(parsed, choices=1, include_usage=False)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in parsed)
    assert text == "Hello from Portway."
    for chunk in parsed:
        validate(chunk, "CreateChatCompletionStreamResponse")


def test_stream_include_usage_and_n(server: Server) -> None:
    body = {
        "model": GEMMA,
        "messages": HELLO,
        "stream": True,
        "n": 2,
        "max_tokens": 8,
        "stream_options": {"include_usage": True},
    }
    parsed = chunks(raw_events(server.base_url, server.admin_token, body))
    check_grammar(parsed, choices=2, include_usage=True)
    usage = parsed[-1]["usage"]
    assert usage["completion_tokens"] <= 16
    for chunk in parsed:
        validate(chunk, "CreateChatCompletionStreamResponse")


def test_unary_gemma(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=GEMMA,
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": "Answer in English."},
            {"role": "user", "content": [{"type": "text", "text": "Name a colour."}]},
        ],
        max_tokens=16,
    )
    choice = reply.choices[0]
    assert reply.model == GEMMA
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 5
    assert 0 < reply.usage.completion_tokens <= 16
    validate(reply.model_dump(mode="json", exclude_unset=True), "CreateChatCompletionResponse")


def test_stream_through_client_matches_unary_for_seed(client: openai.OpenAI) -> None:
    args = {"model": GEMMA, "messages": HELLO, "max_tokens": 20, "seed": 11, "temperature": 0.9}
    unary = client.chat.completions.create(**args)  # type: ignore[call-overload]
    stream = client.chat.completions.create(**args, stream=True)  # type: ignore[call-overload]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == unary.choices[0].message.content


def test_seed_determinism(client: openai.OpenAI) -> None:
    def once(seed: int) -> str:
        reply = client.chat.completions.create(
            model=GEMMA,
            messages=HELLO,
            max_tokens=24,
            seed=seed,
            temperature=1.0,
            logit_bias=NO_END,
        )
        return reply.choices[0].message.content or ""

    first = once(1234)
    assert once(1234) == first
    assert any(once(seed) != first for seed in (1, 2, 3))


def test_max_tokens_gives_length(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=GEMMA, messages=HELLO, max_tokens=50, max_completion_tokens=3, logit_bias=NO_END
    )
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 3


def test_n_choices(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=GEMMA, messages=HELLO, n=2, max_tokens=6, seed=5)
    assert [choice.index for choice in reply.choices] == [0, 1]
    assert reply.usage is not None
    assert reply.usage.completion_tokens <= 12


def test_stop_sequence_is_cut(client: openai.OpenAI) -> None:
    args = {"model": GEMMA, "messages": HELLO, "max_tokens": 6, "logit_bias": FORCED}
    free = client.chat.completions.create(**args).choices[0].message.content  # type: ignore[call-overload]
    assert free == " the" * 6
    cut = client.chat.completions.create(**args, stop=["he t", "zzzz"])  # type: ignore[call-overload]
    assert cut.choices[0].message.content == " t"  # the stop string spans two tokens
    assert cut.choices[0].finish_reason == "stop"
    assert cut.usage is not None and cut.usage.completion_tokens == 2


def test_logprobs(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=GEMMA, messages=HELLO, max_tokens=5, logprobs=True, top_logprobs=3, temperature=0
    )
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None
    assert logprobs.content is not None
    ended = reply.choices[0].finish_reason == "stop"  # an end token has no logprob
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 5 or ended
    assert len(logprobs.content) == reply.usage.completion_tokens - ended
    for item in logprobs.content:
        assert item.logprob <= 0
        assert len(item.top_logprobs) == 3
        values = [top.logprob for top in item.top_logprobs]
        assert values == sorted(values, reverse=True)
        assert item.top_logprobs[0].token == item.token
    text = bytes(b for item in logprobs.content for b in item.bytes or []).decode(errors="replace")
    assert text == reply.choices[0].message.content


@pytest.mark.parametrize(
    "reference",
    [
        GEMMA,
        "http://example.com/" + GEMMA,
        "https://portway.internal:9999/" + GEMMA,
        "gemma-3-270m",
    ],
)
def test_model_reference_forms(client: openai.OpenAI, server: Server, reference: str) -> None:
    reply = client.chat.completions.create(model=reference, messages=HELLO, max_tokens=2)
    assert reply.model == GEMMA
    assert client.models.retrieve(reference).id == GEMMA


def test_versioned_reference(client: openai.OpenAI, server: Server) -> None:
    version = client.models.retrieve(GEMMA).model_extra["version"]  # type: ignore[index]
    assert len(version) == 32
    assert all(char in "0123456789abcdef" for char in version)
    pinned = f"{server.base_url}/{GEMMA}/versions/{version}"
    assert client.chat.completions.create(model=pinned, messages=HELLO, max_tokens=2).model == GEMMA
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model=f"{GEMMA}/versions/{'0' * 32}", messages=HELLO, max_tokens=2
        )


def test_clarifai_base_path(server: Server) -> None:
    client = openai.OpenAI(
        base_url=server.base_url + "/v2/ext/openai/v1", api_key=server.admin_token, max_retries=0
    )
    reply = client.chat.completions.create(model=SCRIPTED, messages=HELLO)
    assert reply.choices[0].message.content == "Hello from Portway."


def test_models_list(client: openai.OpenAI) -> None:
    listed = client.models.list()
    ids = [model.id for model in listed.data]
    assert GEMMA in ids
    assert SCRIPTED in ids
    for model in listed.data:
        assert model.object == "model"
        assert model.created > 0
        assert model.owned_by
    validate(listed.model_dump(mode="json", exclude_unset=True), "ListModelsResponse")
