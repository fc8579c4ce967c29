"""A fast stand-in for a hosted OpenAI-compatible upstream: raw asyncio, HTTP/1.1
keep-alive, canned replies (so that what the relay benchmark measures is the
gateway, not the upstream).

``POST /v1/chat/completions`` answers the script of ``overhead.SCRIPT`` as one JSON
body, or with ``"stream": true`` as server-sent events (one chunk per piece, the
usage chunk when ``stream_options.include_usage`` is set, then ``[DONE]``), sent
chunked in one write. ``GET`` on any path answers ``{}`` (readiness).

Run: ``python bench/fast_upstream.py --port N``.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from overhead import SCRIPT

MODEL = "bench-model"
USAGE = {"prompt_tokens": 12, "completion_tokens": len(SCRIPT), "total_tokens": 12 + len(SCRIPT)}


def _chunk(delta: dict[str, object], finish: str | None = None) -> dict[str, object]:
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def _events(usage: bool) -> bytes:
    chunks = [_chunk({"role": "assistant", "content": ""})]
    chunks += [_chunk({"content": piece}) for piece in SCRIPT]
    chunks.append(_chunk({}, "stop"))
    if usage:
        chunks.append({**_chunk({}), "choices": [], "usage": USAGE})
    body = b"".join(b"data: " + json.dumps(chunk).encode() + b"\n\n" for chunk in chunks)
    return body + b"data: [DONE]\n\n"


def _chunked(events: bytes) -> bytes:
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    parts = [
        f"{len(event) + 2:x}\r\n".encode() + event + b"\n\n\r\n"
        for event in events.split(b"\n\n")
        if event
    ]
    return head + b"".join(parts) + b"0\r\n\r\n"


def _json(body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


UNARY = _json(
    json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1700000000,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(SCRIPT)},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": USAGE,
        }
    ).encode()
)
STREAM = _chunked(_events(usage=False))
STREAM_USAGE = _chunked(_events(usage=True))
READY = _json(b"{}")


class Upstream(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].lower()
            length = 0
            if (at := head.find(b"content-length:")) >= 0:
                length = int(head[at + 15 :].split(b"\r\n", 1)[0])
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            assert self.transport is not None
            self.transport.write(_reply(head, body))


def _reply(head: bytes, body: bytes) -> bytes:
    if not head.startswith(b"post"):
        return READY
    if b'"stream":true' not in body.replace(b" ", b""):
        return UNARY
    return STREAM_USAGE if b'"include_usage":true' in body.replace(b" ", b"") else STREAM


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Upstream, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))
