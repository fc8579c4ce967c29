"""The relay's parts on their own: endpoint pool, retry policy, SSE reading and
rewriting, secrets, and the example catalogue of hosted providers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from portway.backends.tokens import estimate_tokens
from portway.backends.upstream.backend import UpstreamBackend
from portway.backends.upstream.errors import Credentials
from portway.backends.upstream.errors import envelope as _envelope
from portway.backends.upstream.pool import EndpointPool, NoEndpointAvailable, Outcome, display_url
from portway.backends.upstream.retry import RetryPolicy, retry_after_seconds
from portway.backends.upstream.sse import (
    EventSplitter,
    MalformedStream,
    ModelRewriter,
    parse_event,
)
from portway.builders import BUILDERS
from portway.registry import catalog
from portway.serving.relay.endpoints import CHAT, RESPONSES, StreamState
from portway.store import Store
from portway.store.secrets import SecretBox, SecretError, read_secret, set_secret

REPO = Path(__file__).resolve().parents[4]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------------- pool


def test_pool_takes_the_least_busy_then_turns() -> None:
    pool = EndpointPool(("http://a", "http://b", "http://c"), eject_after=2, eject_seconds=5)
    first = pool.acquire()
    second = pool.acquire()
    third = pool.acquire()
    assert {first.url, second.url, third.url} == {"http://a", "http://b", "http://c"}
    pool.release(second, Outcome.OK)
    assert pool.acquire() is second  # the only one with nothing in flight


def test_pool_ejects_after_failures_in_a_row_and_probes_after_the_cool_down() -> None:
    clock = Clock()
    pool = EndpointPool(("http://a",), eject_after=2, eject_seconds=5, clock=clock)
    for _ in range(2):
        pool.release(pool.acquire(), Outcome.FAILED)
    assert pool.health()[0]["state"] == "ejected"
    with pytest.raises(NoEndpointAvailable) as caught:
        pool.acquire()
    assert caught.value.retry_in == 5
    clock.now += 5
    endpoint = pool.acquire()
    assert pool.state(endpoint) == "probing"
    pool.release(endpoint, Outcome.FAILED)  # one failure on probation ejects again
    assert pool.state(endpoint) == "ejected"
    clock.now += 5
    pool.release(pool.acquire(), Outcome.OK)
    assert pool.state(endpoint) == "healthy"


def test_pool_neutral_outcomes_do_not_count() -> None:
    pool = EndpointPool(("http://a",), eject_after=1, eject_seconds=5)
    pool.release(pool.acquire(), Outcome.NEUTRAL)
    assert pool.health()[0]["state"] == "healthy"
    assert pool.health()[0]["in_flight"] == 0


def test_display_url_drops_credentials() -> None:
    assert display_url("https://user:pw@host:8443/v1?key=abc#x") == "https://host:8443/v1"


# ------------------------------------------------------------------------ retry


def test_backoff_grows_and_is_capped_with_jitter() -> None:
    policy = RetryPolicy(max_attempts=5, backoff_base=1, backoff_cap=3, jitter=True)
    assert policy.backoff(1, lambda: 0.0) == 0.5
    assert policy.backoff(2, lambda: 0.999) == pytest.approx(2, abs=0.01)
    assert policy.backoff(4, lambda: 0.999) == pytest.approx(3, abs=0.01)
    plain = RetryPolicy(max_attempts=5, backoff_base=1, backoff_cap=3, jitter=False)
    assert plain.backoff(3) == 3


def test_wait_honours_retry_after_attempts_and_deadline() -> None:
    policy = RetryPolicy(max_attempts=3, backoff_base=0.1, backoff_cap=1, jitter=False)
    assert policy.wait_before(1, 2.0, remaining=10) == 2.0
    assert policy.wait_before(1, None, remaining=10) == 0.1
    assert policy.wait_before(1, 20.0, remaining=10) is None  # would not fit the deadline
    assert policy.wait_before(3, None, remaining=10) is None  # attempts used up


def test_retry_after_forms() -> None:
    assert retry_after_seconds({"Retry-After": "3"}) == 3
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"Retry-After": "Thu, 01 Jan 1970 00:01:40 GMT"}, now=90) == 10
    assert retry_after_seconds({"Retry-After": "soon"}) is None
    assert retry_after_seconds({}) is None


# -------------------------------------------------------------------------- sse


def test_splitter_handles_crlf_and_events_split_across_reads() -> None:
    splitter = EventSplitter()
    assert splitter.feed(b'data: {"a":1}\r') == []
    assert splitter.feed(b'\n\r\ndata: {"b"') == [b'data: {"a":1}']
    assert splitter.feed(b":2}\n\n") == [b'data: {"b":2}']
    assert splitter.pending == b""


def test_parse_event_fields_and_garbage() -> None:
    assert parse_event(b": ping") is None
    event = parse_event(b"event: response.created\nid: 1\ndata: {}")
    assert event is not None
    assert (event.name, event.data) == (b"response.created", b"{}")
    with pytest.raises(MalformedStream):
        parse_event(b"<html>oops</html>")


def test_model_rewriter_replaces_the_key_only() -> None:
    rewriter = ModelRewriter("me/app/models/m")
    raw = b'{"model": "gpt-4o", "choices":[{"delta":{"content":"\\"model\\":\\"gpt-4o\\""}}]}'
    top = json.loads(raw)
    out = rewriter.rewrite(raw, top, top)
    assert json.loads(out)["model"] == "me/app/models/m"
    assert json.loads(out)["choices"] == top["choices"]
    odd = b'{"model":"caf\\u00e9"}'  # spelled so that the replace cannot find it
    parsed = json.loads(odd)
    assert json.loads(rewriter.rewrite(odd, parsed, parsed)) == {"model": "me/app/models/m"}


def _chunk(**fields: object) -> bytes:
    return json.dumps({"model": "up", "choices": [], **fields}).encode()


def test_chat_usage_chunk_goes_to_the_client_only_if_asked() -> None:
    rewriter = ModelRewriter("me/app/models/m")
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    event = parse_event(b"data: " + _chunk(usage=usage))
    assert event is not None
    silent = StreamState(client_usage=False)
    assert CHAT.stream_event(event, silent, rewriter) == b""
    assert silent.usage == (3, 2)
    asked = StreamState(client_usage=True)
    frame = CHAT.stream_event(event, asked, rewriter)
    assert json.loads(frame[len(b"data: ") :])["usage"]["total_tokens"] == 5


def test_chat_stream_must_end_properly_and_counts_text() -> None:
    rewriter = ModelRewriter("me/app/models/m")
    state = StreamState(client_usage=False)
    delta = {"index": 0, "delta": {"content": "Hello there"}, "finish_reason": None}
    event = parse_event(b"data: " + _chunk(choices=[delta]))
    assert event is not None
    CHAT.stream_event(event, state, rewriter)
    assert state.estimated == estimate_tokens(len("Hello there")) == 3
    with pytest.raises(MalformedStream):
        CHAT.stream_end(state)
    done = parse_event(b"data: [DONE]")
    assert done is not None
    CHAT.stream_event(done, state, rewriter)
    assert CHAT.stream_end(state) == b"data: [DONE]\n\n"


def test_chat_error_in_the_stream_is_raised() -> None:
    event = parse_event(b'data: {"error": {"message": "overloaded"}}')
    assert event is not None
    with pytest.raises(MalformedStream, match="overloaded"):
        CHAT.stream_event(event, StreamState(False), ModelRewriter("m"))


def test_responses_events_keep_their_names_and_report_usage() -> None:
    rewriter = ModelRewriter("me/app/models/m")
    state = StreamState(client_usage=False)
    body = {
        "type": "response.completed",
        "sequence_number": 7,
        "response": {"model": "up", "usage": {"input_tokens": 4, "output_tokens": 9}},
    }
    event = parse_event(b"event: response.completed\ndata: " + json.dumps(body).encode())
    assert event is not None
    frame = RESPONSES.stream_event(event, state, rewriter)
    assert frame.startswith(b"event: response.completed\ndata: ")
    assert json.loads(frame.split(b"data: ", 1)[1])["response"]["model"] == "me/app/models/m"
    assert (state.usage, state.finished, state.last_sequence) == ((4, 9), True, 7)
    error = RESPONSES.error_frame(MalformedStream("broken"), state)
    assert b'"sequence_number":8' in error


def test_upstream_error_envelopes_and_scrubbing() -> None:
    assert _envelope(b'{"error": {"message": "m", "code": "c"}}') == {"message": "m", "code": "c"}
    assert _envelope(b'[{"error": {"message": "gemini"}}]') == {"message": "gemini"}
    assert _envelope(b'{"detail": "fastapi"}')["message"] == "fastapi"
    assert _envelope(b"<html>") == {}
    credentials = Credentials("authorization", "sk-123")
    assert credentials.headers() == {"authorization": "Bearer sk-123"}
    assert credentials.scrub("bad key sk-123") == "bad key [redacted]"
    assert Credentials("api-key", "k").headers() == {"api-key": "k"}


# ---------------------------------------------------------------------- secrets


async def test_secrets_are_stored_encrypted(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    try:
        box = SecretBox.open(tmp_path)
        assert (tmp_path / "secrets.key").stat().st_mode & 0o777 == 0o600
        await set_secret(store, box, "openai", "sk-live-abc")
        assert await read_secret(store, box, "openai") == "sk-live-abc"
        ciphertext = await store.get_secret("openai")
        assert ciphertext is not None
        assert b"sk-live-abc" not in ciphertext
        await set_secret(store, box, "openai", "sk-live-new")
        assert await read_secret(store, box, "openai") == "sk-live-new"
        assert [info.name for info in await store.list_secrets()] == ["openai"]
        with pytest.raises(SecretError, match="cannot be decrypted"):
            await read_secret(store, SecretBox.open(tmp_path / "elsewhere"), "openai")
        with pytest.raises(SecretError):
            await set_secret(store, box, "bad name!", "x")
        assert await store.delete_secret("openai")
        assert not await store.delete_secret("openai")
        assert await read_secret(store, box, "openai") is None
    finally:
        await store.close()


# -------------------------------------------------------------------- catalogue


def test_providers_example_is_a_valid_catalogue(tmp_path: Path) -> None:
    cat = catalog.load(REPO / "examples" / "providers.toml")
    names = {spec.reference for spec in cat.models}
    assert "openai/chat-completion/models/gpt-4o" in names
    assert "xai/image-generation/models/grok-2-image-1212" in names
    for spec in cat.models:
        assert isinstance(spec, catalog.OpenAISpec)
        backend, version = BUILDERS[spec.backend](spec, tmp_path)
        assert isinstance(backend, UpstreamBackend)
        assert backend.kind == spec.kind
        assert len(version) == 32
        assert spec.api_key_env  # keys by the name of an environment variable
        for fallback in spec.fallbacks:
            assert fallback in names


def test_openai_spec_needs_one_upstream() -> None:
    base = {"user": "u", "app": "a", "model": "m", "backend": "openai", "upstream_model": "x"}
    with pytest.raises(ValueError, match="base_url"):
        catalog.Catalog.model_validate({"models": [base]})
    with pytest.raises(ValueError, match="http"):
        catalog.Catalog.model_validate({"models": [{**base, "base_url": "ftp://x"}]})
    both = {**base, "base_url": "http://x", "api_key_env": "A", "api_key_secret": "b"}
    with pytest.raises(ValueError, match="not both"):
        catalog.Catalog.model_validate({"models": [both]})
    spec = catalog.Catalog.model_validate({"models": [{**base, "endpoints": ["http://a/v1/"]}]})
    model = spec.models[0]
    assert isinstance(model, catalog.OpenAISpec)
    assert model.urls == ("http://a/v1",)
