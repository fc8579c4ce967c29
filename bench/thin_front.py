"""A bare OpenAI-compatible chat front: the floor Portway's request path is compared to.

What someone would write in an afternoon on the same stack (FastAPI, pydantic,
uvicorn with the same options as ``portway serve``): a bearer-token check against
one constant, a pydantic request model, and a canned reply (one script piece per
token, as Portway's scripted backend) as a unary body or as server-sent events.
No database, no usage records, no model registry, no per-request log line.

Run: ``python bench/thin_front.py --port P --script '["Hello", " world"]' --token T``.
"""

from __future__ import annotations

import argparse
import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from fastapi import FastAPI, Header, HTTPException
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel


class Message(BaseModel):
    role: str
    content: str


class ChatRequest(BaseModel):
    model: str
    messages: list[Message]
    stream: bool = False
    max_tokens: int | None = None


def _envelope(request: ChatRequest, kind: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-" + secrets.token_urlsafe(21),
        "object": kind,
        "created": int(time.time()),
        "model": request.model,
    }


def _unary(request: ChatRequest, pieces: list[str]) -> dict[str, Any]:
    prompt = sum(len(m.content.split()) + 3 for m in request.messages)
    message = {"role": "assistant", "content": "".join(pieces)}
    return {
        **_envelope(request, "chat.completion"),
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": len(pieces),
            "total_tokens": prompt + len(pieces),
        },
    }


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


async def _events(request: ChatRequest, pieces: list[str]) -> AsyncIterator[bytes]:
    envelope = _envelope(request, "chat.completion.chunk")

    def chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return _event({**envelope, "choices": [choice]})

    yield chunk({"role": "assistant", "content": ""})
    for piece in pieces:
        yield chunk({"content": piece})
    yield chunk({}, "stop")
    yield b"data: [DONE]\n\n"


def create_app(script: list[str], token: str) -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    expected = f"Bearer {token}"

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(
        request: ChatRequest, authorization: str = Header("")
    ) -> JSONResponse | StreamingResponse:
        if not secrets.compare_digest(authorization, expected):
            raise HTTPException(401, "invalid token")
        pieces = script[: request.max_tokens] if request.max_tokens else script
        if request.stream:
            return StreamingResponse(_events(request, pieces), media_type="text/event-stream")
        return JSONResponse(_unary(request, pieces))

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--script", required=True, help="JSON list of reply pieces")
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    app = create_app(json.loads(args.script), args.token)
    uvicorn.run(app, host="127.0.0.1", port=args.port, access_log=False, log_config=None)


if __name__ == "__main__":
    main()
