"""Runners across processes: two ``portway serve`` processes on one PostgreSQL
database, the machine's Redis and NATS (a cluster name of each test's own), a
real ``portway runner`` attached to one and the ``openai`` client at the other."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.ledger import wait_for_rows
from tests.e2e.runners import SLOW_MODEL, Runner, model_folder
from tests.e2e.server import Server, free_port

CATALOG = """
default_model = false
default_embedding_model = false

[[models]]
user = "portway"
app = "test"
model = "scripted"
backend = "scripted"
"""
MODEL = "alice/runners/models/slow"
HI: Any = [{"role": "user", "content": "hello there runner"}]


@pytest.fixture
def pair(
    tmp_path: Path, postgres_url: str, cluster_args: tuple[str, ...]
) -> Iterator[tuple[Server, Server]]:
    """Processes A and B of one cluster (A made the first admin; B shares its token)."""
    a = Server(tmp_path / "a", CATALOG, database_url=postgres_url, args=cluster_args).start()
    b = Server(tmp_path / "b", CATALOG, database_url=postgres_url, args=cluster_args)
    b.admin_token = a.admin_token
    try:
        b.start()
        yield a, b
    finally:
        for server in (a, b):
            with suppress(Exception):
                server.stop()


class FailoverProxy:
    """A load balancer in front of the processes: each connection goes to the first
    of ``upstreams`` that accepts it."""

    def __init__(self, upstreams: list[int]) -> None:
        self.upstreams = upstreams
        self.port = free_port()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        for port in self.upstreams:
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=2)
            except OSError:
                continue
            upstream.settimeout(None)
            threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
            _pipe(client, upstream)
            return
        client.close()

    def close(self) -> None:
        self.listener.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    for end in (source, sink):
        with suppress(OSError):
            end.shutdown(socket.SHUT_RDWR)


def health(server: Server) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    body: dict[str, Any] = httpx.get(server.base_url + "/health", headers=headers).json()
    return body


def runners_of(server: Server, model: str = MODEL) -> list[dict[str, Any]]:
    return [
        runner
        for found in health(server)["runners"]
        if found["id"] == model
        for runner in found["runners"]
    ]


def wait_until(check: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_runner_at_a_streams_to_a_client_at_b(
    pair: tuple[Server, Server], tmp_path: Path
) -> None:
    a, b = pair
    folder = model_folder(tmp_path / "models", SLOW_MODEL, concurrency=1)
    runner = Runner(folder, a, a.token("alice", "runner"), env={"SLOW_WORDS": "4"}).start()
    try:
        wait_until(lambda: len(runners_of(b)) == 1)
        [seen] = runners_of(b)
        assert seen["process"] == health(a)["process"] != health(b)["process"]
        assert (seen["runner"], seen["concurrency"]) == (runners_of(a)[0]["runner"], 1)
        client = openai.OpenAI(base_url=b.base_url + "/v1", api_key=b.token("uma"), max_retries=0)
        assert MODEL in {model.id for model in client.models.list()}
        stream = client.chat.completions.create(model=MODEL, messages=HI, stream=True)
        pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
        assert "".join(pieces) == f"{runner.pid} 0 1 2 3"
        assert len([piece for piece in pieces if piece]) == 5  # streamed, piece by piece
        [row] = wait_for_rows(b, "uma", 1)
        assert (row.status, row.model, row.version_id) == ("completed", MODEL, runner.version)
        wait_until(lambda: runners_of(a)[0]["served"] == 1)
    finally:
        runner.stop()


def test_a_client_leaving_b_cancels_on_the_runner_at_a(
    pair: tuple[Server, Server], tmp_path: Path
) -> None:
    a, b = pair
    folder = model_folder(tmp_path / "models", SLOW_MODEL, model="cancel")
    model = "alice/runners/models/cancel"
    token = a.token("alice", "runner")
    runner = Runner(folder, a, token, env={"SLOW_DELAY": "0.3"}).start()
    try:
        wait_until(lambda: len(runners_of(b, model)) == 1)
        body = {"model": model, "messages": HI, "stream": True}
        headers = {"Authorization": f"Bearer {b.admin_token}"}
        with httpx.stream(
            "POST", b.base_url + "/v1/chat/completions", json=body, headers=headers
        ) as response:
            lines = response.iter_lines()
            assert [next(lines) for _ in range(4)]
        wait_until(lambda: (folder / "stopped").exists())
        wait_until(lambda: runners_of(a, model)[0]["in_flight"] == 0)
        assert runners_of(a, model)[0]["served"] == 0
    finally:
        runner.stop()


def test_a_killed_process_fails_its_calls_and_its_runner_moves(
    pair: tuple[Server, Server], tmp_path: Path
) -> None:
    a, b = pair
    proxy = FailoverProxy([a.port, b.port])
    folder = model_folder(tmp_path / "models", SLOW_MODEL, model="moving", concurrency=1)
    model = "alice/runners/models/moving"
    runner = Runner(folder, a, a.token("alice", "runner"), env={"SLOW_DELAY": "0.5"})
    runner.server = Server(a.data_dir, port=proxy.port)  # it connects through the proxy
    runner.start()
    try:
        wait_until(lambda: len(runners_of(b, model)) == 1)
        fay = openai.OpenAI(base_url=b.base_url + "/v1", api_key=b.token("fay"), max_retries=0)
        stream = fay.chat.completions.create(model=model, messages=HI, stream=True)
        pieces = iter(stream)
        next(pieces)
        assert next(pieces).choices[0].delta.content == str(runner.pid)
        a.stop(signal.SIGKILL)
        with pytest.raises(openai.APIError) as caught:
            for _ in pieces:
                pass
        assert "went away" in str(caught.value)
        [row] = wait_for_rows(b, "fay", 1)
        assert (row.status, row.error_code) == ("failed", "runner_lost")
        assert runner.lines.get(timeout=30) == f"serving {model} version {runner.version}"
        wait_until(
            lambda: [found["process"] for found in runners_of(b, model)] == [health(b)["process"]]
        )
        reply = fay.chat.completions.create(model=model, messages=HI, max_tokens=3)
        assert (reply.choices[0].message.content or "").startswith(str(runner.pid))
    finally:
        runner.stop()
        proxy.close()
