"""A fault-injecting OpenAI-compatible upstream, run as its own process:
``python -m tests.upstream_fake --port N [--name A]``.

What it does depends on the ``model`` it is asked for (the catalogue's
``upstream_model``), so one server plays every fault:

- ``ok``: a normal reply (unary or stream, with usage when asked);
  ``slow``: the same after 1 s; ``no-usage``: a stream that never reports usage
- ``hang-headers``: never answers; ``hang-mid-stream``: two chunks, then nothing
- ``close-mid-stream``: two chunks, then the connection is dropped
- ``trickle``: the answer one byte per second
- ``malformed-sse`` / ``malformed-json``: a stream of garbage
- ``garbage``: a unary 200 whose body is not JSON
- ``status-NNN``: that status with an OpenAI error envelope (``Retry-After: 1`` on 429)
- ``flaky-NNN-K``: status NNN for the first K requests, then ``ok``
- ``echo-key``: 401 whose message quotes the API key it was sent
- images from ``picture``: a ``url`` to a PNG this server serves itself
  (``GET /files/picture.png``; ``b64_json`` when asked) with a ``revised_prompt``;
  ``picture-missing``, ``picture-unreachable``, ``picture-ftp`` and
  ``picture-html``: a ``url`` to a 404, a closed port, an ``ftp://`` address and
  an HTML page; other image models: ``https://images.example/fake.png``
- image streams (``"stream": true``): ``partial_images`` partial events, then one
  ``image_generation.completed`` event per image with usage, as OpenAI streams
  them; ``picture-stream-break`` drops the connection after its partial events

``GET /stats`` gives the requests seen (by model), the Authorization headers and
how many streams are open; ``POST /fail`` makes every request a 500 (``/heal``
undoes it); ``POST /reset`` clears the counters.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import io
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

WORDS = ["Hello", " from", " the", " fake", " upstream", "."]


class State:
    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: Counter[str] = Counter()
        self.keys: list[str] = []
        self.open_streams = 0
        self.failing = False
        self.paths: Counter[str] = Counter()


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(body).encode() + b"\r\n\r\n"


def _usage_chunk(model: str) -> bytes:
    body = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [],
        "usage": {"prompt_tokens": 7, "completion_tokens": len(WORDS), "total_tokens": 13},
    }
    return b"data: " + json.dumps(body).encode() + b"\r\n\r\n"


def _frames(model: str, usage: bool) -> list[bytes]:
    frames = [_chunk(model, {"role": "assistant", "content": ""})]
    frames += [_chunk(model, {"content": word}) for word in WORDS]
    frames.append(_chunk(model, {}, "stop"))
    if usage:
        frames.append(_usage_chunk(model))
    return [*frames, b"data: [DONE]\r\n\r\n"]


def _completion(model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(WORDS)},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": len(WORDS), "total_tokens": 13},
    }


def _error(status: int, key: str = "") -> Response:
    message = f"Incorrect API key provided: {key}" if key else f"fake upstream says {status}"
    body = {
        "error": {
            "message": message,
            "type": "invalid_request_error" if status < 500 else "server_error",
            "param": "messages" if status == 400 else None,
            "code": "fake_code" if status < 500 else None,
        }
    }
    headers = {"Retry-After": "1"} if status == 429 else None
    return JSONResponse(body, status_code=status, headers=headers)


async def _stream(state: State, frames: list[bytes], after: str) -> AsyncIterator[bytes]:
    state.open_streams += 1
    try:
        if after == "trickle":
            for frame in frames:
                for index in range(len(frame)):
                    yield frame[index : index + 1]
                    await asyncio.sleep(1)
            return
        for index, frame in enumerate(frames):
            if index == 2 and after == "hang":
                await asyncio.sleep(3600)
            if index == 2 and after == "close":
                raise RuntimeError("dropping the connection mid-stream")
            yield frame
    finally:
        state.open_streams -= 1


def _flaky(state: State, model: str) -> int | None:
    """The status of a ``flaky-NNN-K`` request, or None once it has failed K times."""
    _, status, times = model.split("-")
    return int(status) if state.calls[model] <= int(times) else None


async def _chat(request: Request, state: State, body: dict[str, Any]) -> Response:
    model = str(body.get("model"))
    stream = bool(body.get("stream"))
    usage = bool((body.get("stream_options") or {}).get("include_usage"))
    if model.startswith("status-"):
        return _error(int(model.split("-")[1]))
    if model.startswith("flaky-") and (status := _flaky(state, model)) is not None:
        return _error(status)
    if model == "echo-key":
        return _error(401, request.headers.get("authorization", "").removeprefix("Bearer "))
    if model == "hang-headers":
        await asyncio.sleep(3600)
    if model == "slow":
        await asyncio.sleep(1)
    if model == "garbage":
        return PlainTextResponse("<html>oops</html>")
    if not stream:
        return JSONResponse(_completion(model))
    if model == "malformed-sse":
        frames = [b"this is not an event\n\n", b"data: [DONE]\n\n"]
    elif model == "malformed-json":
        # one write: a good event and a bad one may reach the relay in one read
        frames = [_chunk(model, {"role": "assistant", "content": ""}) + b"data: {oops\n\n"]
    else:
        frames = _frames(model, usage and model != "no-usage")
    after = {"hang-mid-stream": "hang", "close-mid-stream": "close", "trickle": "trickle"}
    return StreamingResponse(
        _stream(state, frames, after.get(model, "")), media_type="text/event-stream"
    )


async def _embeddings(body: dict[str, Any]) -> Response:
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    data = [
        {"object": "embedding", "index": index, "embedding": [0.1, 0.2, 0.3]}
        for index in range(len(inputs))
    ]
    usage = {"prompt_tokens": 3 * len(inputs), "total_tokens": 3 * len(inputs)}
    return JSONResponse({"object": "list", "model": body["model"], "data": data, "usage": usage})


def _response_events(model: str) -> list[bytes]:
    response = {"id": "resp_fake", "object": "response", "model": model, "status": "in_progress"}
    done = {
        **response,
        "status": "completed",
        "usage": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7},
    }
    events: list[dict[str, Any]] = [
        {"type": "response.created", "sequence_number": 0, "response": response},
        {"type": "response.output_text.delta", "sequence_number": 1, "delta": "Hi there"},
        {"type": "response.completed", "sequence_number": 2, "response": done},
    ]
    return [f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode() for event in events]


async def _responses(state: State, body: dict[str, Any]) -> Response:
    model = str(body.get("model"))
    if body.get("stream"):
        frames = _response_events(model)
        return StreamingResponse(_stream(state, frames, ""), media_type="text/event-stream")
    usage = {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7}
    return JSONResponse(
        {"id": "resp_fake", "object": "response", "model": model, "output": [], "usage": usage}
    )


REVISED = "A revised prompt, from the fake upstream."
PICTURE_URLS = {
    "picture": "{base}files/picture.png",
    "picture-missing": "{base}files/missing.png",
    "picture-unreachable": "http://127.0.0.1:9/picture.png",
    "picture-ftp": "ftp://127.0.0.1/picture.png",
    "picture-html": "{base}files/page.html",
}


@functools.cache
def picture_png() -> bytes:
    """A small PNG (16x8, two colours), made with Pillow once."""
    from PIL import Image

    image = Image.new("RGB", (16, 8), (200, 40, 40))
    image.paste((40, 40, 200), (8, 0, 16, 8))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _picture(model: str, base: str, b64: bool) -> dict[str, Any]:
    if b64:
        return {"b64_json": base64.b64encode(picture_png()).decode(), "revised_prompt": REVISED}
    return {"url": PICTURE_URLS[model].format(base=base), "revised_prompt": REVISED}


IMAGE_USAGE = {
    "input_tokens": 40,
    "output_tokens": 60,
    "total_tokens": 100,
    "input_tokens_details": {"text_tokens": 10, "image_tokens": 30},
}


def _image_events(body: dict[str, Any]) -> list[bytes]:
    png = base64.b64encode(picture_png()).decode()
    common = {
        "b64_json": png,
        "background": "opaque",
        "created_at": int(time.time()),
        "output_format": "png",
        "quality": "low",
        "size": "1024x1024",
    }
    events: list[dict[str, Any]] = [
        {"type": "image_generation.partial_image", "partial_image_index": index, **common}
        for index in range(int(body.get("partial_images") or 0))
    ]
    if body.get("model") != "picture-stream-break":
        done = {"type": "image_generation.completed", "usage": IMAGE_USAGE, **common}
        events += [done] * int(body.get("n") or 1)
    return [f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode() for event in events]


async def _image_stream(state: State, body: dict[str, Any]) -> AsyncIterator[bytes]:
    async for frame in _stream(state, _image_events(body), ""):
        yield frame
    if body.get("model") == "picture-stream-break":
        raise RuntimeError("dropping the connection mid-stream")


async def _images(request: Request, state: State, body: dict[str, Any]) -> Response:
    model, count = str(body.get("model")), body.get("n") or 1
    if body.get("stream"):
        return StreamingResponse(_image_stream(state, body), media_type="text/event-stream")
    if model in PICTURE_URLS:
        b64 = body.get("response_format") == "b64_json"
        data = [_picture(model, str(request.base_url), b64) for _ in range(count)]
    else:
        data = [{"url": "https://images.example/fake.png"} for _ in range(count)]
    return JSONResponse({"created": int(time.time()), "data": data})


async def _file(request: Request) -> Response:
    name = request.path_params["name"]
    if name == "picture.png":
        return Response(picture_png(), media_type="image/png")
    if name == "page.html":
        return Response("<html>not an image</html>", media_type="text/html")
    return PlainTextResponse("not found", status_code=404)


def create_app(name: str) -> Starlette:
    state = State(name)

    async def relayable(request: Request) -> Response:
        path = request.url.path
        state.paths[path] += 1
        body = json.loads(await request.body())
        state.calls[str(body.get("model"))] += 1
        state.keys.append(request.headers.get("authorization", ""))
        if state.failing:
            return _error(500)
        if path.endswith("/embeddings"):
            return await _embeddings(body)
        if path.endswith("/images/generations"):
            return await _images(request, state, body)
        if path.endswith("/responses"):
            return await _responses(state, body)
        return await _chat(request, state, body)

    async def stats(request: Request) -> Response:
        return JSONResponse(
            {
                "name": state.name,
                "calls": dict(state.calls),
                "paths": dict(state.paths),
                "keys": state.keys[-20:],
                "open_streams": state.open_streams,
            }
        )

    async def switch(request: Request) -> Response:
        action = request.url.path.rsplit("/", 1)[-1]
        if action == "reset":
            state.calls.clear()
            state.paths.clear()
            state.keys.clear()
        else:
            state.failing = action == "fail"
        return JSONResponse({"failing": state.failing})

    async def file(request: Request) -> Response:
        state.paths[request.url.path] += 1
        return await _file(request)

    routes = [
        Route("/files/{name}", file),
        Route("/v1/chat/completions", relayable, methods=["POST"]),
        Route("/v1/embeddings", relayable, methods=["POST"]),
        Route("/v1/images/generations", relayable, methods=["POST"]),
        Route("/v1/responses", relayable, methods=["POST"]),
        Route("/stats", stats),
        Route("/fail", switch, methods=["POST"]),
        Route("/heal", switch, methods=["POST"]),
        Route("/reset", switch, methods=["POST"]),
    ]
    return Starlette(routes=routes)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="upstream")
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.name),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        timeout_graceful_shutdown=1,
    )


if __name__ == "__main__":
    main()
