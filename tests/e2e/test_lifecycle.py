"""Start, restart and stop a real server: first-run token, stable versions,
graceful shutdown that finishes in-flight work and loses no usage, PostgreSQL."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.ledger import usage_rows
from tests.e2e.server import TOKEN_LINE, Server

SLOW = "portway/test/models/slow"
CATALOG = """
default_model = false
default_embedding_model = false

[[models]]
user = "portway"
app = "test"
model = "slow"
backend = "scripted"
script = ["one", " two", " three", " four", " five", " six", " seven", " eight"]
delay = 0.25
"""
HELLO = [{"role": "user", "content": "count"}]


def test_restart_keeps_tokens_versions_and_prints_the_token_once(fresh_dir: Path) -> None:
    first = Server(fresh_dir, CATALOG).start()
    try:
        assert len(TOKEN_LINE.findall(first.log_text())) == 1
        assert "open to other local users" not in first.log_text()  # the harness made it 0700
        version = first.client().models.retrieve(SLOW).model_extra["version"]  # type: ignore[index]
    finally:
        assert first.stop() == 0
    second = Server(fresh_dir, CATALOG, admin_token=first.admin_token).start()
    try:
        assert len(TOKEN_LINE.findall(second.log_text())) == 1, "the token is printed only once"
        again = second.client().models.retrieve(SLOW).model_extra["version"]  # type: ignore[index]
        assert again == version
    finally:
        second.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_graceful_shutdown_finishes_in_flight_stream(fresh_dir: Path, sig: int) -> None:
    server = Server(fresh_dir, CATALOG).start()
    started = threading.Event()
    texts: list[str] = []

    def stream() -> None:
        chunks = server.client().chat.completions.create(model=SLOW, messages=HELLO, stream=True)
        for chunk in chunks:
            started.set()
            texts.extend(choice.delta.content or "" for choice in chunk.choices)

    worker = threading.Thread(target=stream)
    worker.start()
    assert started.wait(30)
    assert server.process is not None
    server.process.send_signal(sig)
    worker.join(60)
    assert "".join(texts) == "one two three four five six seven eight"
    assert server.stop() == 0
    rows = usage_rows(server, "admin")
    assert [(row.status, row.completion_tokens) for row in rows] == [("completed", 8)]
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.base_url + "/health")


@pytest.mark.postgres
def test_server_on_postgresql(fresh_dir: Path, postgres_url: str) -> None:
    server = Server(fresh_dir, CATALOG, database_url=postgres_url).start()
    try:
        token = server.token("ivy")
        client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=token, max_retries=0)
        reply = client.chat.completions.create(model=SLOW, messages=HELLO, max_tokens=2)
        assert reply.choices[0].finish_reason == "length"
        assert not (fresh_dir / "portway.db").exists()
    finally:
        assert server.stop() == 0
    rows = usage_rows(server, "ivy")
    assert [(row.status, row.completion_tokens) for row in rows] == [("completed", 2)]
