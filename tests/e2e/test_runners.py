"""Runners end to end: a real server, real ``portway runner`` processes over loopback,
the real ``openai`` client."""

from __future__ import annotations

import base64
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from portway.sdk.scaffold import write_echo_model
from tests.e2e.ledger import wait_for_rows
from tests.e2e.runners import (
    BOOM_MODEL,
    EMBED_MODEL,
    IMAGE_MODEL,
    SLOW_MODEL,
    Runner,
    model_folder,
)
from tests.e2e.server import Server
from tests.e2e.sse import check_grammar, chunks, raw_events

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "models"
ECHO = "demo/examples/models/echo"
DECLARED = "alice/runners/models/declared"
CATALOG = """
default_model = false
default_embedding_model = false

[[models]]
user = "portway"
app = "test"
model = "scripted"
backend = "scripted"

[[models]]
user = "alice"
app = "runners"
model = "declared"
backend = "runner"
"""
HI = [{"role": "user", "content": "hello there runner"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("runners-data"), catalog=CATALOG).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def alice_runner(server: Server) -> str:
    return server.token("alice", "runner")


@pytest.fixture(scope="module")
def echo(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    folder = tmp_path_factory.mktemp("echo")  # what `portway model init` writes
    write_echo_model(folder, user="demo", app="examples", model_id="echo")
    runner = Runner(folder, server, server.token("demo", "runner")).start()
    yield runner
    runner.stop()


@pytest.fixture
def folders(tmp_path: Path) -> Path:
    return tmp_path


def listed(client: openai.OpenAI) -> set[str]:
    return {model.id for model in client.models.list()}


def wait_until(check: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def runner_health(server: Server, model: str) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    body = httpx.get(server.base_url + "/health", headers=headers).json()
    return [
        runner for found in body["runners"] if found["id"] == model for runner in found["runners"]
    ]


def test_echo_unary_and_streamed_with_usage(server: Server, echo: Runner) -> None:
    token = server.token("uma")
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=token, max_retries=0)
    reply = client.chat.completions.create(model=ECHO, messages=HI)
    assert reply.choices[0].message.content == "hello there runner"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == ECHO
    assert reply.system_fingerprint == "fp_" + echo.version[:10]
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (3, 3)
    body = {
        "model": ECHO,
        "messages": HI,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    parsed = chunks(raw_events(server.base_url, token, body))
    check_grammar(parsed, choices=1, include_usage=True)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in parsed if c["choices"])
    assert text == "hello there runner"
    assert [c["choices"][0]["delta"] for c in parsed[1:4]] == [
        {"content": "hello"},
        {"content": " there"},
        {"content": " runner"},
    ]
    rows = wait_for_rows(server, "uma", 2)
    assert [(row.model, row.version_id, row.completion_tokens) for row in rows] == [
        (ECHO, echo.version, 3)
    ] * 2


def test_listed_only_while_attached(server: Server, client: openai.OpenAI) -> None:
    runner = Runner(EXAMPLES / "tools", server, server.token("demo", "runner")).start()
    assert "demo/examples/models/weather" in listed(client)
    assert DECLARED in listed(client)
    assert runner.stop() == 0
    wait_until(lambda: "demo/examples/models/weather" not in listed(client))
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="demo/examples/models/weather", messages=HI)
    assert caught.value.status_code == 503
    assert caught.value.response.headers["retry-after"] == "5"


def test_tool_calls_from_a_model_that_yields_them(server: Server, client: openai.OpenAI) -> None:
    runner = Runner(EXAMPLES / "tools", server, server.token("demo", "runner")).start()
    try:
        tools: Any = [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": {
                        "type": "object",
                        "properties": {"location": {"type": "string"}},
                        "required": ["location"],
                    },
                },
            }
        ]
        question: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
        reply = client.chat.completions.create(
            model="demo/examples/models/weather", messages=question, tools=tools
        )
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.tool_calls is not None
        call = choice.message.tool_calls[0]
        assert call.type == "function"
        assert call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == {"location": "Paris"}
        stream = client.chat.completions.create(
            model="demo/examples/models/weather", messages=question, tools=tools, stream=True
        )
        pieces = [c.choices[0] for c in stream if c.choices]
        assert pieces[-1].finish_reason == "tool_calls"
        streamed = [p.delta.tool_calls[0] for p in pieces if p.delta.tool_calls]
        assert streamed[0].function is not None
        assert streamed[0].function.name == "get_weather"
    finally:
        runner.stop()


def test_no_runner_503_never_seen_404(client: openai.OpenAI) -> None:
    assert client.models.retrieve(DECLARED).id == DECLARED
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=DECLARED, messages=HI)
    assert caught.value.status_code == 503
    assert caught.value.response.headers["retry-after"] == "5"
    assert caught.value.code == "model_unavailable"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="alice/runners/models/never", messages=HI)


def test_refusals(server: Server, folders: Path, alice_runner: str) -> None:
    folder = model_folder(folders, SLOW_MODEL, model="declared")
    cases = [
        (server.token("bob", "runner"), "403"),
        (server.token("alice"), "lacks the 'runner' scope"),
        ("pwt_" + "x" * 46, "401"),
    ]
    for token, says in cases:
        runner = Runner(folder, server, token).start(wait=False)
        assert runner.wait() == 1
        assert says in runner.stderr, runner.stderr
    taken = model_folder(folders, SLOW_MODEL, user="portway", app="test", model="scripted")
    runner = Runner(taken, server, server.token("admin", "runner", "admin")).start(wait=False)
    assert runner.wait() == 1
    assert "409" in runner.stderr
    assert "cannot take over its name" in runner.stderr


def test_a_folder_without_an_owner_serves_under_the_tokens_user(
    server: Server, client: openai.OpenAI, folders: Path
) -> None:
    folder = folders / "unowned"
    write_echo_model(folder, user=None, app="own", model_id="mine")  # `portway model init`
    runner = Runner(folder, server, server.token("carol", "runner")).start()
    try:
        assert runner.serving == f"serving carol/own/models/mine version {runner.version}"
        reply = client.chat.completions.create(model="carol/own/models/mine", messages=HI)
        assert reply.model == "carol/own/models/mine"
        assert reply.choices[0].message.content == "hello there runner"
    finally:
        runner.stop()


def test_two_runners_share_load(server: Server, folders: Path, alice_runner: str) -> None:
    folder = model_folder(folders, SLOW_MODEL, model="shared", concurrency=2)
    env = {"SLOW_WORDS": "3", "SLOW_DELAY": "0.2"}
    one = Runner(folder, server, alice_runner, env=env).start()
    two = Runner(folder, server, alice_runner, env=env).start()
    try:
        model = "alice/runners/models/shared"
        streams = [
            httpx.stream(
                "POST",
                server.base_url + "/v1/chat/completions",
                json={"model": model, "messages": HI, "stream": True},
                headers={"Authorization": f"Bearer {server.admin_token}"},
                timeout=30,
            )
            for _ in range(4)
        ]
        responses = [stream.__enter__() for stream in streams]
        try:
            bodies = [response.read().decode() for response in responses]
        finally:
            for stream in streams:
                stream.__exit__(None, None, None)
        pids = {int(body.split('"content":"')[2].split('"')[0]) for body in bodies}
        assert pids == {one.pid, two.pid}
        served = sorted(runner["served"] for runner in runner_health(server, model))
        assert served == [2, 2]
    finally:
        one.stop()
        two.stop()


def test_sigkill_mid_stream_errors_then_the_other_runner_serves(
    server: Server, client: openai.OpenAI, folders: Path, alice_runner: str
) -> None:
    folder = model_folder(folders, SLOW_MODEL, model="failover", concurrency=1)
    one = Runner(folder, server, alice_runner).start()
    two = Runner(folder, server, alice_runner).start()
    try:
        model = "alice/runners/models/failover"
        fay = openai.OpenAI(
            base_url=server.base_url + "/v1", api_key=server.token("fay"), max_retries=0
        )
        stream = fay.chat.completions.create(model=model, messages=HI, stream=True)
        pieces = iter(stream)
        next(pieces)
        victim = int(next(pieces).choices[0].delta.content or "0")
        survivor = two if victim == one.pid else one
        (one if victim == one.pid else two).stop(signal.SIGKILL)
        with pytest.raises(openai.APIError) as caught:
            for _ in pieces:
                pass
        assert "went away" in str(caught.value)
        reply = client.chat.completions.create(model=model, messages=HI)
        assert (reply.choices[0].message.content or "").startswith(str(survivor.pid))
        [row] = wait_for_rows(server, "fay", 1)
        assert (row.status, row.error_code, row.model) == ("failed", "runner_lost", model)
        assert row.completion_tokens >= 1
    finally:
        one.stop()
        two.stop()


def test_client_disconnect_cancels_on_the_runner(
    server: Server, folders: Path, alice_runner: str
) -> None:
    folder = model_folder(folders, SLOW_MODEL, model="cancel")
    runner = Runner(folder, server, alice_runner, env={"SLOW_DELAY": "0.3"}).start()
    try:
        body = {"model": "alice/runners/models/cancel", "messages": HI, "stream": True}
        headers = {"Authorization": f"Bearer {server.admin_token}"}
        with httpx.stream(
            "POST", server.base_url + "/v1/chat/completions", json=body, headers=headers
        ) as response:
            lines = response.iter_lines()
            assert [next(lines) for _ in range(4)]
        wait_until(lambda: (folder / "stopped").exists())
        wait_until(
            lambda: runner_health(server, "alice/runners/models/cancel")[0]["in_flight"] == 0
        )
    finally:
        runner.stop()


def test_user_exception_is_a_clean_500(
    server: Server, client: openai.OpenAI, folders: Path, alice_runner: str
) -> None:
    folder = model_folder(folders, BOOM_MODEL, model="boom")
    runner = Runner(folder, server, alice_runner).start()
    try:
        with pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(model="alice/runners/models/boom", messages=HI)
        assert caught.value.status_code == 500
        assert caught.value.code == "model_error"
        assert "ValueError: the model is broken" in caught.value.message
        later: Any = [{"role": "user", "content": "later"}]
        stream = client.chat.completions.create(
            model="alice/runners/models/boom", messages=later, stream=True
        )
        with pytest.raises(openai.APIError, match="the model is broken"):
            for _ in stream:
                pass
        assert runner.process is not None and runner.process.poll() is None
    finally:
        runner.stop()


def test_pinned_versions(
    server: Server, client: openai.OpenAI, folders: Path, alice_runner: str
) -> None:
    old = model_folder(folders, SLOW_MODEL, model="pinned", extra="# v1\n")
    new = model_folder(folders, SLOW_MODEL, model="pinned", extra="# v2\n")
    env = {"SLOW_WORDS": "0"}
    first = Runner(old, server, alice_runner, args=("--private",), env=env).start()
    second = Runner(new, server, alice_runner, env=env).start()
    model = "alice/runners/models/pinned"
    try:
        assert first.version != second.version

        def served_by(name: str) -> int:
            reply = client.chat.completions.create(model=name, messages=HI)
            return int(reply.choices[0].message.content or "0")

        assert served_by(model) == second.pid
        bob = openai.OpenAI(
            base_url=server.base_url + "/v1", api_key=server.token("bob"), max_retries=0
        )
        bob.chat.completions.create(model=model, messages=HI)
        with pytest.raises(openai.NotFoundError):
            bob.chat.completions.create(model=f"{model}/versions/{first.version}", messages=HI)
        assert served_by(f"{model}/versions/{first.version}") == first.pid
        assert served_by(f"{model}/versions/{second.version}") == second.pid
        with pytest.raises(openai.NotFoundError):
            served_by(f"{model}/versions/{'f' * 32}")
        second.stop()
        wait_until(lambda: served_by(model) == first.pid)
        with pytest.raises(openai.APIStatusError) as caught:
            served_by(f"{model}/versions/{second.version}")
        assert caught.value.status_code == 503
    finally:
        first.stop()
        second.stop()


def test_gemma_through_a_runner(server: Server, client: openai.OpenAI) -> None:
    runner = Runner(EXAMPLES / "gemma", server, server.token("demo", "runner")).start(timeout=180)
    try:
        model = "demo/examples/models/gemma"
        question: Any = [{"role": "user", "content": "Name a colour."}]
        reply = client.chat.completions.create(
            model=model, messages=question, max_tokens=6, temperature=0, seed=1
        )
        # What Gemma writes differs between CPUs, and a Python model takes no
        # logit_bias to forbid its end tokens: the reply may end before max_tokens.
        choice = reply.choices[0]
        assert reply.usage is not None
        assert reply.usage.completion_tokens <= 6
        assert choice.finish_reason in ("stop", "length")
        if choice.finish_reason == "length":
            assert choice.message.content
        stream = client.chat.completions.create(
            model=model, messages=question, max_tokens=6, temperature=0, seed=1, stream=True
        )
        chunks = [c for c in stream if c.choices]
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
        assert streamed == (choice.message.content or "")  # greedy: the same tokens again
        assert chunks[-1].choices[0].finish_reason == choice.finish_reason
    finally:
        runner.stop()


async def test_protocol_breaches_close_the_runner_not_the_server(
    server: Server, alice_runner: str
) -> None:
    from websockets.asyncio.client import connect

    url = server.base_url.replace("http://", "ws://") + "/v1/runners/connect"
    headers = {"Authorization": f"Bearer {alice_runner}"}
    hello = {
        "type": "hello",
        "model": {"reference": "alice/runners/models/raw", "version": "a" * 32},
        "concurrency": 1,
    }
    async with connect(url, additional_headers=headers) as ws:
        await ws.send(json.dumps({"type": "hello", "model": {"reference": "x"}}))
        refused = json.loads(await ws.recv())
        assert refused["type"] == "refused"
        assert refused["status"] == 400
        assert "model.version" in refused["message"]
        await ws.wait_closed()
        assert ws.close_code == 4400
    async with connect(url, additional_headers=headers) as ws:
        await ws.send(json.dumps(hello).encode())
        refused = json.loads(await ws.recv())
        assert (refused["status"], refused["message"]) == (400, "frames are JSON text, not binary")
    async with connect(url, additional_headers=headers) as ws:
        await ws.send(json.dumps(hello))
        assert json.loads(await ws.recv())["type"] == "ready"
        await ws.send(json.dumps({"type": "delta", "id": "c1", "delta": {"tokens": -5}}))
        refused = json.loads(await ws.recv())
        assert refused["status"] == 400
        assert "negative" in refused["message"]
        await ws.wait_closed()
        assert ws.close_code == 4400
    async with httpx.AsyncClient() as http:
        assert (await http.get(server.base_url + "/health")).json() == {"status": "ok"}


def test_runner_reconnects_after_a_server_restart(tmp_path: Path) -> None:
    restarting = Server(tmp_path / "data", catalog=CATALOG).start()
    try:
        token = restarting.token("alice", "runner")
        folder = model_folder(tmp_path / "models", SLOW_MODEL, model="again")
        runner = Runner(folder, restarting, token, env={"SLOW_WORDS": "0"}).start()
        assert restarting.stop() == 0
        restarting.start()
        assert (
            runner.lines.get(timeout=30)
            == f"serving alice/runners/models/again version {runner.version}"
        )
        client = openai.OpenAI(
            base_url=restarting.base_url + "/v1", api_key=restarting.admin_token, max_retries=0
        )
        reply = client.chat.completions.create(model="alice/runners/models/again", messages=HI)
        assert reply.choices[0].message.content == str(runner.pid)
        assert runner.stop(signal.SIGINT) == 0
    finally:
        restarting.stop()


def test_a_runner_model_of_an_earlier_run_gets_503_not_404(tmp_path: Path) -> None:
    restarting = Server(tmp_path / "data", catalog=CATALOG).start()
    try:
        token = restarting.token("alice", "runner")
        folder = model_folder(tmp_path / "models", SLOW_MODEL, model="known")
        assert Runner(folder, restarting, token, env={"SLOW_WORDS": "0"}).start().stop() == 0
        assert restarting.stop() == 0
        restarting.start()
        client = openai.OpenAI(
            base_url=restarting.base_url + "/v1", api_key=restarting.admin_token, max_retries=0
        )
        assert "alice/runners/models/known" not in listed(client)
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="alice/runners/models/known", messages=HI)
        assert caught.value.status_code == 503
        assert caught.value.response.headers["retry-after"] == "5"
    finally:
        restarting.stop()


def test_embedding_and_image_models(
    server: Server, client: openai.OpenAI, folders: Path, alice_runner: str
) -> None:
    embed = model_folder(
        folders, EMBED_MODEL, model="letters", kind="embedding", extra="dimensions = 4\n"
    )
    image = model_folder(folders, IMAGE_MODEL, model="grey", kind="image")
    runners = [
        Runner(embed, server, alice_runner).start(),
        Runner(image, server, alice_runner).start(),
    ]
    try:
        found = client.embeddings.create(
            model="alice/runners/models/letters", input=["ab", "abc d"]
        )
        assert [item.embedding for item in found.data] == [[2, 1, 0, 0], [5, 1, 0, 0]]
        assert found.usage.prompt_tokens == 3
        with pytest.raises(openai.BadRequestError):
            client.embeddings.create(model="alice/runners/models/letters", input=[[1, 2]])
        with pytest.raises(openai.BadRequestError, match="embedding model"):
            client.chat.completions.create(model="alice/runners/models/letters", messages=HI)
        made = client.images.generate(
            model="alice/runners/models/grey",
            prompt="grey",
            n=2,
            size="64x64",  # type: ignore[arg-type]
            response_format="b64_json",
        )
        assert made.data is not None and len(made.data) == 2
        png = base64.b64decode(made.data[0].b64_json or "")
        assert png.startswith(b"\x89PNG") and png[16:24] == bytes([0, 0, 0, 64, 0, 0, 0, 64])
    finally:
        for runner in runners:
            runner.stop()


def test_a_model_that_fails_to_load_exits_1(server: Server, folders: Path) -> None:
    source = "from portway import ModelClass\n\nclass Broken(ModelClass):\n"
    source += "    def load_model(self):\n        raise RuntimeError('no weights here')\n"
    folder = model_folder(folders, source, model="broken")
    runner = Runner(folder, server, "unused").start(wait=False)
    assert runner.wait() == 1
    assert "loading the model failed: RuntimeError: no weights here" in runner.stderr


def test_sigterm_drains_the_runner(
    server: Server, client: openai.OpenAI, folders: Path, alice_runner: str
) -> None:
    folder = model_folder(folders, SLOW_MODEL, model="drain")
    runner = Runner(folder, server, alice_runner, env={"SLOW_WORDS": "10"}).start()
    model = "alice/runners/models/drain"
    try:
        stream = client.chat.completions.create(model=model, messages=HI, stream=True)
        pieces = iter(stream)
        next(pieces)
        assert runner.process is not None
        runner.process.send_signal(signal.SIGTERM)
        text = "".join(chunk.choices[0].delta.content or "" for chunk in pieces if chunk.choices)
        assert text.endswith(" 8 9")
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model=model, messages=HI)
        assert caught.value.status_code == 503
        assert runner.wait() == 0
        assert "draining" in server.log_text()
    finally:
        runner.stop()
