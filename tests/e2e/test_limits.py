"""Slow and hostile clients, and runners that never answer, against a real server
with small (test-set) timeouts. Raw sockets do what HTTP clients would not."""

from __future__ import annotations

import asyncio
import json
import socket
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.server import Server

FIREHOSE = "portway/test/models/firehose"
DECLARED = "alice/limits/models/declared"
CATALOG = """
default_model = false
default_embedding_model = false

[[models]]
user = "portway"
app = "test"
model = "firehose"
backend = "python"
path = "firehose"

[[models]]
user = "alice"
app = "limits"
model = "declared"
backend = "runner"
timeouts = { first_byte = 1, idle = 1 }
"""
FIREHOSE_MODEL = '''
from portway import ModelClass

class Firehose(ModelClass):
    """One slot; "short" gets "ok", anything else a stream of about 128 MB."""

    def count_tokens(self, text):
        return 1

    def generate(self, messages, params):
        if messages[-1]["content"] == "short":
            yield "ok"
            return
        finished = False
        try:
            for _ in range(2000):
                yield "x" * 65536
            finished = True
        finally:
            if not finished:
                (self.path / "stopped").write_text("stopped early")
'''
LIMITS = (
    "--header-timeout", "1", "--body-timeout", "1", "--stall-timeout", "1",
    "--max-header-bytes", "4096", "--max-headers", "20",
)  # fmt: skip
OUTER = 60.0
"""The generous bound on anything the server should do within a second or two."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("limits-data")
    folder = data / "firehose"
    folder.mkdir()
    (folder / "model.py").write_text(textwrap.dedent(FIREHOSE_MODEL))
    (folder / "portway-model.toml").write_text(
        '[model]\nuser = "portway"\napp = "test"\nid = "firehose"\n'
        "context_length = 1000000\nconcurrency = 1\n"
    )
    running = Server(data, catalog=CATALOG, args=LIMITS).start()
    yield running
    running.stop()


def connect(server: Server, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(OUTER)
    sock.connect(("127.0.0.1", server.port))
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (or OUTER passes: a failure)."""
    found = b""
    deadline = time.monotonic() + OUTER
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            return found
        found += chunk
    raise AssertionError(f"the server kept the connection open; it sent {found[:300]!r}")


def read_response(sock: socket.socket) -> bytes:
    """One whole response with a Content-Length body (it may arrive in several reads)."""
    found = b""
    while b"\r\n\r\n" not in found:
        found += recv_some(sock)
    head, _, body = found.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += recv_some(sock)
    return head + b"\r\n\r\n" + body


def recv_some(sock: socket.socket) -> bytes:
    chunk = sock.recv(65536)
    if not chunk:
        raise AssertionError("the server closed the connection mid-response")
    return chunk


def trickle_until_answered(sock: socket.socket, byte: bytes = b"a") -> bytes:
    """Send a byte every 0.2 s (a slowloris client) until the server answers."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + OUTER
    while time.monotonic() < deadline:
        try:
            sock.sendall(byte)
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return b""
        sock.settimeout(OUTER)
        return chunk + read_until_closed(sock)
    raise AssertionError("the server never answered a client that trickles bytes")


def status_and_error(response: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)["error"] if body else {}


def request_head(server: Server, body_length: int, *, token: str | None = None) -> bytes:
    lines = [
        "POST /v1/chat/completions HTTP/1.1",
        f"Host: 127.0.0.1:{server.port}",
        "Content-Type: application/json",
        f"Content-Length: {body_length}",
    ]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chat_request(server: Server, content: str, *, stream: bool) -> bytes:
    body = json.dumps(
        {"model": FIREHOSE, "messages": [{"role": "user", "content": content}], "stream": stream}
    ).encode()
    return request_head(server, len(body), token=server.admin_token) + body


def test_headers_that_never_finish_get_408_and_the_connection_closes(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        answer = trickle_until_answered(sock)
    status, error = status_and_error(answer)
    assert status == 408
    assert error["code"] == "request_timeout"


def test_a_connection_that_sends_nothing_is_closed(server: Server) -> None:
    with connect(server) as sock:
        assert status_and_error(read_until_closed(sock))[0] == 408


def test_a_body_that_never_finishes_gets_408_and_the_connection_closes(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(request_head(server, 1000, token=server.admin_token) + b'{"model": ')
        answer = trickle_until_answered(sock, b" ")
    status, error = status_and_error(answer)
    assert status == 408
    assert error["code"] == "request_timeout"
    assert error["type"] == "invalid_request_error"


def test_a_body_nobody_reads_still_ends_its_connection(server: Server) -> None:
    with connect(server) as sock:  # no token: answered (401) before its body is read
        sock.sendall(request_head(server, 1000) + b'{"model": ')
        answer = trickle_until_answered(sock, b" ")
    assert status_and_error(answer)[0] == 401


@pytest.mark.parametrize(
    "headers",
    [
        [("X-Big", "a" * 10_000)],
        [(f"X-Many-{index}", "1") for index in range(40)],
    ],
    ids=["too-big", "too-many"],
)
def test_too_big_or_too_many_headers_get_431(
    server: Server, headers: list[tuple[str, str]]
) -> None:
    lines = ["GET /health HTTP/1.1", "Host: x", *(f"{key}: {value}" for key, value in headers)]
    with connect(server) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        status, error = status_and_error(read_until_closed(sock))
    assert status == 431
    assert error["code"] == "headers_too_large"
    assert httpx.get(server.base_url + "/health").status_code == 200


def test_a_reader_that_stops_reading_frees_its_slot(server: Server) -> None:
    stalled = connect(server, rcvbuf=4096)
    try:
        stalled.sendall(chat_request(server, "long", stream=True))
        assert stalled.recv(1024).startswith(b"HTTP/1.1 200")  # streaming: the slot is taken
        # ... and never read again. The one slot comes free, so this one is served:
        reply = httpx.post(
            server.base_url + "/v1/chat/completions",
            json={"model": FIREHOSE, "messages": [{"role": "user", "content": "short"}]},
            headers={"Authorization": f"Bearer {server.admin_token}"},
            timeout=OUTER,
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["message"]["content"] == "ok"
        assert (server.data_dir / "firehose" / "stopped").exists()
    finally:
        stalled.close()


def test_connections_over_the_cap_get_503_while_the_others_go_on(tmp_path: Path) -> None:
    catalog = "default_model = false\ndefault_embedding_model = false\n"
    capped = Server(tmp_path / "data", catalog=catalog, args=("--max-connections", "3"))
    capped.start()
    try:
        health = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{capped.port}\r\n\r\n".encode()
        admitted = [connect(capped) for _ in range(3)]
        for sock in admitted:
            sock.sendall(health)
            assert read_response(sock).startswith(b"HTTP/1.1 200")
        with connect(capped) as extra:
            extra.sendall(health)
            status, error = status_and_error(read_until_closed(extra))
        assert status == 503
        assert error["code"] == "too_many_connections"
        admitted[0].sendall(health)
        assert read_response(admitted[0]).startswith(b"HTTP/1.1 200")
        admitted.pop().close()
        deadline = time.monotonic() + OUTER
        while httpx.get(capped.base_url + "/health").status_code != 200:
            assert time.monotonic() < deadline, "a freed place was never given out"
        for sock in admitted:
            sock.close()
    finally:
        capped.stop()


async def attach_raw_runner(server: Server, model: str, timeouts: dict[str, float] | None) -> Any:
    """A runner that says hello and then answers nothing unless told."""
    from websockets.asyncio.client import connect as ws_connect

    url = server.base_url.replace("http://", "ws://") + "/v1/runners/connect"
    info: dict[str, Any] = {"reference": model, "version": "b" * 32}
    if timeouts is not None:
        info["timeouts"] = timeouts
    token = server.token("alice", "runner")
    ws = await ws_connect(url, additional_headers={"Authorization": f"Bearer {token}"})
    await ws.send(json.dumps({"type": "hello", "model": info, "concurrency": 1}))
    assert json.loads(await ws.recv())["type"] == "ready"
    return ws


async def test_a_runner_that_never_answers_gets_504_and_a_cancel(server: Server) -> None:
    model = "alice/limits/models/silent"
    ws = await attach_raw_runner(server, model, {"first_byte": 1, "idle": 1})
    try:
        async with httpx.AsyncClient(timeout=OUTER) as http:
            reply = await http.post(
                server.base_url + "/v1/chat/completions",
                json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
                headers={"Authorization": f"Bearer {server.admin_token}"},
            )
        assert reply.status_code == 504
        assert reply.json()["error"]["code"] == "runner_timeout"
        call = json.loads(await ws.recv())
        assert call["type"] == "chat"
        assert json.loads(await ws.recv()) == {"type": "cancel", "id": call["id"]}
    finally:
        await ws.close()


async def test_a_runner_that_goes_quiet_mid_stream_ends_it_and_gets_a_cancel(
    server: Server,
) -> None:
    ws = await attach_raw_runner(server, DECLARED, None)  # the catalogue's deadlines
    body = {"model": DECLARED, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    headers = {"Authorization": f"Bearer {server.admin_token}"}

    async def answer_once_then_go_quiet() -> Any:
        call = json.loads(await ws.recv())
        delta = {"type": "delta", "id": call["id"], "delta": {"text": "Hel", "tokens": 1}}
        await ws.send(json.dumps(delta))
        return call

    try:
        answering = asyncio.ensure_future(answer_once_then_go_quiet())
        async with (
            httpx.AsyncClient(timeout=OUTER) as http,
            http.stream(
                "POST", server.base_url + "/v1/chat/completions", json=body, headers=headers
            ) as response,
        ):
            lines = [line async for line in response.aiter_lines() if line.startswith("data: ")]
        call = await answering
        assert response.status_code == 200
        events = [json.loads(line.removeprefix("data: ")) for line in lines]
        text = "".join(
            event["choices"][0]["delta"].get("content") or ""
            for event in events
            if event.get("choices")
        )
        assert text == "Hel"
        assert events[-1]["error"]["code"] == "runner_timeout"
        assert json.loads(await ws.recv()) == {"type": "cancel", "id": call["id"]}
    finally:
        await ws.close()
