"""``portway model init / predict / serve`` and model folders served in-process,
through real server processes and the real ``openai`` client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.conftest import WEATHER_SCHEMA
from tests.e2e.ledger import wait_for_rows
from tests.e2e.server import TOKEN_LINE, Server, portway
from tests.e2e.sse import raw_events

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "models"
DEMO = "me/demo/models/talker"
WEATHER = "demo/examples/models/weather"
GEMMA = "demo/examples/models/gemma"
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA},
}
TALKER = '''
import time

from portway import ModelClass
from portway.sdk import Usage


class Talker(ModelClass):
    """Echoes word by word; fails when asked to."""

    def count_tokens(self, text):
        return len(text.split())

    def generate(self, messages, params):
        text = messages[-1]["content"]
        if text == "fail now":
            raise ValueError("the talker cannot do that")
        if text == "talk forever":
            yield from self.forever()
            return
        words = text.split()
        for index, word in enumerate(words):
            if word == "explode":
                raise RuntimeError("exploded mid-sentence")
            yield word if index == 0 else " " + word
        yield Usage(prompt_tokens=100, completion_tokens=len(words))

    def forever(self):
        try:
            while True:
                time.sleep(0.05)
                yield " more"
        finally:
            (self.path / ".closed").write_text("closed")
'''


def test_init_then_predict(tmp_path: Path) -> None:
    folder = tmp_path / "my-model"
    out = portway("model", "init", str(folder)).stdout
    assert "wrote" in out
    assert 'id = "my-model"' in (folder / "portway-model.toml").read_text()
    result = portway("model", "predict", str(folder), "Hello there, Portway")
    assert result.stdout == "Hello there, Portway\n"
    assert "finish_reason=stop prompt_tokens=3 completion_tokens=3" in result.stderr
    result = portway("model", "predict", str(folder), "one two three four", "--max-tokens", "2")
    assert result.stdout == "one two\n"
    assert "finish_reason=length" in result.stderr


def test_init_refuses_to_overwrite_and_predict_reports_config_errors(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    portway("model", "init", str(folder))
    again = subprocess.run(
        [sys.executable, "-m", "portway", "model", "init", str(folder)],
        capture_output=True,
        text=True,
    )
    assert again.returncode != 0
    assert "not overwriting" in again.stderr
    (folder / "portway-model.toml").write_text('[model]\nuser = "me"\napp = "x"\nid = "m"\nk = 1\n')
    bad = subprocess.run(
        [sys.executable, "-m", "portway", "model", "predict", str(folder), "hi"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0
    assert "portway-model.toml: model.k: Extra inputs are not permitted" in bad.stderr


@dataclass
class ModelServer(Server):
    """``portway model serve FOLDER`` instead of ``portway serve``."""

    folder: Path = field(default_factory=Path)

    def start(self, timeout: float = 120.0) -> ModelServer:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        command = [sys.executable, "-m", "portway", "model", "serve", str(self.folder)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*command, "--port", str(self.port), *self.store_args(), "--grace", "20"],
                stdout=log,
                stderr=log,
            )
        self._wait_ready(timeout)
        found = TOKEN_LINE.search(self.log_text())
        assert found, self.log_text()
        self.admin_token = found.group(1)
        return self


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    folder = tmp_path_factory.mktemp("talker")
    (folder / "model.py").write_text(TALKER)
    (folder / "portway-model.toml").write_text(
        '[model]\nuser = "me"\napp = "demo"\nid = "talker"\nconcurrency = 2\n'
    )
    server = ModelServer(tmp_path_factory.mktemp("model-serve"), folder=folder).start()
    yield server
    assert server.stop() == 0


def test_model_serve_lists_only_the_folder(served: ModelServer) -> None:
    assert f"serving {DEMO} at http://127.0.0.1:{served.port}/v1" in served.log_text()
    assert f'model="http://127.0.0.1:{served.port}/{DEMO}"' in served.log_text()  # the snippet
    assert [model.id for model in served.client().models.list()] == [DEMO]


def test_unary_and_streamed_with_usage_in_the_ledger(served: ModelServer) -> None:
    client = served.client()
    reply = client.chat.completions.create(
        model=DEMO, messages=[{"role": "user", "content": "ports carry ships"}]
    )
    assert reply.choices[0].message.content == "ports carry ships"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (100, 3)
    stream = client.chat.completions.create(
        model=DEMO,
        messages=[{"role": "user", "content": "a b c d e"}],
        max_tokens=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "a b c"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3
    rows = wait_for_rows(served, "admin", 2)
    assert {(row.model, row.prompt_tokens, row.completion_tokens) for row in rows} >= {
        (DEMO, 100, 3),
        (DEMO, 5, 3),
    }


def test_user_exceptions_become_errors_and_the_server_keeps_serving(served: ModelServer) -> None:
    client = served.client()
    for stream in (False, True):
        with pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(
                model=DEMO, messages=[{"role": "user", "content": "fail now"}], stream=stream
            )
        assert caught.value.status_code == 500
        body = caught.value.response.json()["error"]
        assert body["message"] == "ValueError: the talker cannot do that"
        assert (body["type"], body["code"]) == ("server_error", "model_error")
    events = raw_events(
        served.base_url,
        served.admin_token,
        {"model": DEMO, "messages": [{"role": "user", "content": "go on explode"}], "stream": True},
    )
    assert json.loads(events[-1])["error"]["message"] == "RuntimeError: exploded mid-sentence"
    parsed = [json.loads(event)["choices"][0]["delta"] for event in events[:-1]]
    assert "".join(delta.get("content", "") for delta in parsed) == "go on"
    reply = client.chat.completions.create(
        model=DEMO, messages=[{"role": "user", "content": "still here"}]
    )
    assert reply.choices[0].message.content == "still here"


def test_parameters_the_model_cannot_honour_are_refused(served: ModelServer) -> None:
    for extra in ({"logprobs": True}, {"logit_bias": {"1": 1}}, {"tools": [WEATHER_TOOL]}):
        response = httpx.post(
            served.base_url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {served.admin_token}"},
            json={"model": DEMO, "messages": [{"role": "user", "content": "hi"}], **extra},
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == next(iter(extra))


@pytest.fixture(scope="module")
def catalogued(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A plain ``portway serve`` whose catalogue serves two example folders."""
    data_dir = tmp_path_factory.mktemp("python-models")
    catalog = f"""
default_model = false
default_embedding_model = false

[[models]]
user = "demo"
app = "examples"
model = "weather"
backend = "python"
path = "{EXAMPLES / "tools"}"

[[models]]
user = "demo"
app = "examples"
model = "gemma"
backend = "python"
path = "{EXAMPLES / "gemma"}"
"""
    server = Server(data_dir, catalog=catalog)
    previous = os.environ.get("PORTWAY_DATA_DIR")
    os.environ["PORTWAY_DATA_DIR"] = str(data_dir)  # where open_llama assembles the GGUF
    try:
        server.start(timeout=240)
    finally:
        if previous is None:
            del os.environ["PORTWAY_DATA_DIR"]
        else:
            os.environ["PORTWAY_DATA_DIR"] = previous
    yield server
    server.stop()


def test_tool_calls_from_a_model_that_yields_them(catalogued: Server) -> None:
    client = catalogued.client()
    question = [{"role": "user", "content": "What is the weather like in Paris?"}]
    reply = client.chat.completions.create(model=WEATHER, messages=question, tools=[WEATHER_TOOL])
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.type == "function"
    assert call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "Paris"}
    stream = client.chat.completions.create(
        model=WEATHER, messages=question, tools=[WEATHER_TOOL], stream=True
    )
    chunks = [chunk for chunk in stream if chunk.choices]
    pieces = [c.choices[0].delta.tool_calls for c in chunks if c.choices[0].delta.tool_calls]
    assert pieces[0][0].function.name == "get_weather"  # type: ignore[union-attr]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    answer = client.chat.completions.create(
        model=WEATHER,
        tools=[WEATHER_TOOL],
        messages=[
            *question,
            choice.message.model_dump(exclude_none=True),  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 24 C"},
        ],
    )
    assert answer.choices[0].message.content == "The weather report says: Sunny, 24 C"
    assert answer.choices[0].finish_reason == "stop"


def test_gemma_example_served_in_process(catalogued: Server) -> None:
    client = catalogued.client()
    reply = client.chat.completions.create(
        model=GEMMA,
        messages=[{"role": "user", "content": "Name three colours."}],
        max_tokens=8,
        temperature=0,
    )
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage is not None
    assert 0 < reply.usage.completion_tokens <= 8
    stream = client.chat.completions.create(
        model=GEMMA,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=6,
        stream=True,
    )
    texts = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert texts


def test_a_client_that_disconnects_closes_the_generator(served: ModelServer) -> None:
    marker = served.folder / ".closed"
    body = {"model": DEMO, "messages": [{"role": "user", "content": "talk forever"}]}
    headers = {"Authorization": f"Bearer {served.admin_token}"}
    with httpx.stream(
        "POST",
        served.base_url + "/v1/chat/completions",
        json={**body, "stream": True},
        headers=headers,
        timeout=30,
    ) as response:
        lines = response.iter_lines()
        assert any("more" in line for line in lines)
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.read_text() == "closed"
