"""Hosted models whose upstream misbehaves (tests/upstream_fake.py): each fault
gives the client the documented answer within the model's (short) timeouts;
retries and fallbacks happen only before the first byte; other requests are
served meanwhile; replicas are balanced and a failing one is ejected."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.ledger import wait_for_rows
from tests.e2e.server import Server
from tests.upstreams import FakeUpstream

HELLO = [{"role": "user", "content": "hi"}]
KEY = "sk-fake-upstream-5d1c0b9e"
FAST = (
    "timeouts = { connect = 2, first_byte = 2, idle = 1, total = 4 }\n"
    "retries = { max_attempts = 2, backoff_base = 0.05, backoff_cap = 0.1 }\n"
)
MODELS = {
    "ok": "ok",
    "no-usage": "no-usage",
    "hang-headers": "hang-headers",
    "hang-mid-stream": "hang-mid-stream",
    "close-mid-stream": "close-mid-stream",
    "trickle": "trickle",
    "malformed-sse": "malformed-sse",
    "malformed-json": "malformed-json",
    "garbage": "garbage",
    "status-400": "status-400",
    "status-429": "status-429",
    "status-500": "status-500",
    "flaky-503": "flaky-503-1",
    "flaky-429": "flaky-429-1",
    "echo-key": "echo-key",
}


def _entry(model: str, upstream: str, base: str, extra: str = "") -> str:
    return (
        f'[[models]]\nuser = "fault"\napp = "x"\nmodel = "{model}"\nbackend = "openai"\n'
        f'base_url = "{base}"\nupstream_model = "{upstream}"\napi_key_env = "FAKE_UPSTREAM_KEY"\n'
        f"{FAST}{extra}\n"
    )


def _catalog(one: FakeUpstream, two: FakeUpstream) -> str:
    text = "default_model = false\ndefault_embedding_model = false\n\n"
    text += "".join(_entry(name, upstream, one.base_url) for name, upstream in MODELS.items())
    text += _entry("falls-back", "status-503", one.base_url, 'fallbacks = ["fault/x/models/ok"]\n')
    pair = f'endpoints = ["{one.base_url}", "{two.base_url}"]\n'
    for name in ("pair", "pair-eject"):
        text += _entry(name, "ok", one.base_url, "eject_after = 2\neject_seconds = 2\n").replace(
            f'base_url = "{one.base_url}"\n', pair
        )
    return text


@pytest.fixture(scope="module")
def upstreams(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    logs = tmp_path_factory.mktemp("fake-upstreams")
    one, two = FakeUpstream(logs, "one").start(), FakeUpstream(logs, "two").start()
    yield one, two
    one.stop()
    two.stop()


@pytest.fixture(scope="module")
def portway(
    tmp_path_factory: pytest.TempPathFactory,
    upstreams: tuple[FakeUpstream, FakeUpstream],
) -> Iterator[Server]:
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", KEY)
    server = Server(tmp_path_factory.mktemp("portway-faults"), catalog=_catalog(*upstreams))
    yield server.start()
    server.stop()
    monkeypatch.undo()


@pytest.fixture(scope="module")
def token(portway: Server) -> str:
    return portway.token("faulty")


@pytest.fixture
def client(portway: Server, token: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=portway.base_url + "/v1", api_key=token, max_retries=0, timeout=20
    )


def _model(name: str) -> str:
    return f"fault/x/models/{name}"


def _calls(upstream: FakeUpstream, model: str) -> int:
    found: int = upstream.stats()["calls"].get(model, 0)
    return found


def _raw_stream(portway: Server, token: str, model: str) -> tuple[int, list[str]]:
    body = {"model": _model(model), "messages": HELLO, "stream": True}
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.stream(
        "POST", portway.base_url + "/v1/chat/completions", json=body, headers=headers, timeout=20
    ) as response:
        text = response.read().decode()
    return response.status_code, [event for event in text.split("\n\n") if event]


def _error_event(events: list[str]) -> dict[str, Any]:
    last = events[-1]
    assert last.startswith("data: "), last
    found: dict[str, Any] = json.loads(last[len("data: ") :])["error"]
    return found


def test_hang_before_headers_is_a_504_after_retries(
    client: openai.OpenAI, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=_model("hang-headers"), messages=HELLO)
    assert caught.value.status_code == 504
    assert caught.value.code == "upstream_timeout"
    assert _calls(upstreams[0], "hang-headers") == 2


def test_hang_mid_stream_ends_with_an_error_event_and_no_retry(
    portway: Server, token: str, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    status, events = _raw_stream(portway, token, "hang-mid-stream")
    assert status == 200
    assert len(events) == 3  # two chunks relayed, then the error
    assert json.loads(events[1][6:])["model"] == _model("hang-mid-stream")
    assert _error_event(events)["code"] == "upstream_timeout"
    assert _calls(upstreams[0], "hang-mid-stream") == 1


def test_close_mid_stream_ends_with_an_error_event(
    portway: Server, token: str, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    status, events = _raw_stream(portway, token, "close-mid-stream")
    assert status == 200
    assert _error_event(events)["code"] == "upstream_error"
    assert _calls(upstreams[0], "close-mid-stream") == 1


def test_broken_stream_usage_is_recorded(portway: Server) -> None:
    user = "broken"
    token = portway.token(user)
    _raw_stream(portway, token, "close-mid-stream")
    rows = wait_for_rows(portway, user, 1)
    assert rows[0].status == "failed"
    assert rows[0].error_code == "upstream_error"
    assert rows[0].completion_tokens > 0  # estimated from the text streamed before the break
    assert rows[0].model == _model("close-mid-stream")


def test_malformed_stream_before_first_byte_is_a_502_after_retries(
    client: openai.OpenAI, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=_model("malformed-sse"), messages=HELLO, stream=True)
    assert caught.value.status_code == 502
    assert _calls(upstreams[0], "malformed-sse") == 2


def test_malformed_json_mid_stream_is_an_error_event(portway: Server, token: str) -> None:
    status, events = _raw_stream(portway, token, "malformed-json")
    assert status == 200
    assert _error_event(events)["code"] == "upstream_error"


def test_unary_garbage_is_a_502(
    client: openai.OpenAI, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=_model("garbage"), messages=HELLO)
    assert caught.value.status_code == 502
    assert _calls(upstreams[0], "garbage") == 2  # garbage is retried: nothing was sent yet


def test_trickle_hits_the_deadline(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=_model("trickle"), messages=HELLO, stream=True)
    assert caught.value.status_code == 504


def test_upstream_400_reaches_the_client_as_is(
    client: openai.OpenAI, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=_model("status-400"), messages=HELLO)
    assert caught.value.body == {
        "message": "fake upstream says 400",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "fake_code",
    }
    assert caught.value.param == "messages"
    assert caught.value.code == "fake_code"
    assert _calls(upstreams[0], "status-400") == 1


def test_429_is_retried_after_retry_after_then_relayed(
    client: openai.OpenAI, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=_model("status-429"), messages=HELLO)
    assert caught.value.response.headers["retry-after"] == "1"
    assert _calls(upstreams[0], "status-429") == 2
    reply = client.chat.completions.create(model=_model("flaky-429"), messages=HELLO)
    assert reply.choices[0].message.content
    assert _calls(upstreams[0], "flaky-429-1") == 2


def test_5xx_is_retried_then_a_502(
    client: openai.OpenAI, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=_model("status-500"), messages=HELLO)
    assert caught.value.status_code == 502
    assert _calls(upstreams[0], "status-500") == 2
    reply = client.chat.completions.create(model=_model("flaky-503"), messages=HELLO, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in reply if c.choices)


def test_fallback_serves_when_the_primary_fails(portway: Server) -> None:
    user = "fallen"
    client = openai.OpenAI(
        base_url=portway.base_url + "/v1", api_key=portway.token(user), max_retries=0
    )
    reply = client.chat.completions.create(model=_model("falls-back"), messages=HELLO)
    assert reply.model == _model("ok")
    rows = wait_for_rows(portway, user, 1)
    assert rows[0].model == _model("ok")
    assert rows[0].completion_tokens == 6


def test_upstream_401_is_a_502_that_does_not_leak_the_key(
    client: openai.OpenAI, portway: Server, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=_model("echo-key"), messages=HELLO)
    assert caught.value.status_code == 502
    assert KEY not in caught.value.response.text
    assert f"Bearer {KEY}" in upstreams[0].stats()["keys"]
    assert KEY not in portway.log_text()
    models = client.models.list()
    assert _model("ok") in [model.id for model in models]
    assert KEY not in json.dumps([model.model_dump() for model in models])


def test_others_are_served_while_an_upstream_hangs(client: openai.OpenAI) -> None:
    failures: list[BaseException] = []

    def hang() -> None:
        try:
            client.chat.completions.create(model=_model("hang-headers"), messages=HELLO)
        except openai.APIStatusError as exc:
            failures.append(exc)

    thread = threading.Thread(target=hang)
    thread.start()
    for _ in range(5):
        reply = client.chat.completions.create(model=_model("ok"), messages=HELLO)
        assert reply.choices[0].message.content
    assert thread.is_alive(), "the hanging request is still waiting meanwhile"
    thread.join()
    assert len(failures) == 1


def test_disconnect_closes_the_upstream_request(
    portway: Server, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    user = "leaver"
    token = portway.token(user)
    body = {"model": _model("hang-mid-stream"), "messages": HELLO, "stream": True}
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.stream(
        "POST", portway.base_url + "/v1/chat/completions", json=body, headers=headers, timeout=20
    ) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        assert upstreams[0].stats()["open_streams"] >= 1
    deadline = time.monotonic() + 10
    while upstreams[0].stats()["open_streams"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstreams[0].stats()["open_streams"] == 0
    rows = wait_for_rows(portway, user, 1)
    assert rows[0].status == "cancelled"


def test_stream_without_upstream_usage_is_estimated(client: openai.OpenAI, portway: Server) -> None:
    user = "estimated"
    other = openai.OpenAI(
        base_url=portway.base_url + "/v1", api_key=portway.token(user), max_retries=0
    )
    stream = other.chat.completions.create(
        model=_model("no-usage"),
        messages=HELLO,
        stream=True,
        stream_options={"include_usage": True},
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Hello from the fake upstream."
    rows = wait_for_rows(portway, user, 1)
    assert rows[0].status == "completed"
    # Estimated: "Hello", " from", " the", " fake", " upstream", "." at one token per
    # four characters (rounded, at least one a chunk): 1 + 1 + 1 + 1 + 2 + 1.
    assert rows[0].completion_tokens == 7


def test_two_endpoints_share_the_load(
    client: openai.OpenAI, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    for upstream in upstreams:
        upstream.post("reset")
    for _ in range(6):
        client.chat.completions.create(model=_model("pair"), messages=HELLO)
    assert _calls(upstreams[0], "ok") == 3
    assert _calls(upstreams[1], "ok") == 3


def test_a_failing_endpoint_is_ejected_then_probed(
    client: openai.OpenAI, portway: Server, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    one, two = upstreams
    one.post("reset")
    two.post("reset")
    one.post("fail")
    try:
        for _ in range(8):  # every request still succeeds: a failed attempt is retried on two
            reply = client.chat.completions.create(model=_model("pair-eject"), messages=HELLO)
            assert reply.choices[0].message.content
        assert _calls(one, "ok") == 2  # two failures in a row, then ejected
        assert _calls(two, "ok") == 8
        states = _endpoint_states(portway)
        assert states == {one.base_url: "ejected", two.base_url: "healthy"}
    finally:
        one.post("heal")
    time.sleep(2.5)  # the cool-down
    assert _endpoint_states(portway)[one.base_url] == "probing"
    for _ in range(4):
        client.chat.completions.create(model=_model("pair-eject"), messages=HELLO)
    assert _calls(one, "ok") > 2
    assert _endpoint_states(portway)[one.base_url] == "healthy"


def _endpoint_states(portway: Server) -> dict[str, str]:
    health = httpx.get(
        portway.base_url + "/health", headers={"Authorization": f"Bearer {portway.admin_token}"}
    ).json()
    entry = next(model for model in health["models"] if model["id"] == _model("pair-eject"))
    return {endpoint["url"]: endpoint["state"] for endpoint in entry["endpoints"]}
