"""What differs between the endpoints the relay serves: the upstream path, how
usage is reported, how a stream is framed and how it ends.

Usage comes from the upstream (chat streams are always asked for it with
``stream_options.include_usage``; the usage chunk reaches the client only if the
client asked too). When a stream breaks, or an upstream never reports usage, the
ledger gets an estimate: completion tokens are the streamed text (content,
reasoning, refusals, tool-call arguments) at one token per four characters,
rounded, and at least one per chunk that carries text; prompt tokens are the request's
message text counted the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from portway import sse
from portway.backends.base import Kind
from portway.backends.tokens import estimate_tokens
from portway.backends.upstream.sse import (
    Event,
    MalformedStream,
    ModelRewriter,
    parse_json,
)
from portway.errors import PortwayError, UnsupportedParameter


class UpstreamStreamError(MalformedStream):
    """The upstream reported an error inside a stream it had begun."""


@dataclass
class StreamState:
    """What one relayed stream has shown so far."""

    client_usage: bool
    usage: tuple[int, int] | None = None
    estimated: int = 0
    finished: bool = False
    saw_finish_reason: bool = False
    last_sequence: int = -1


def _int(value: object) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def _usage(obj: dict[str, Any], prompt_key: str, completion_key: str) -> tuple[int, int] | None:
    usage = obj.get("usage")
    if not isinstance(usage, dict):
        return None
    return _int(usage.get(prompt_key)), _int(usage.get(completion_key))


def _text_length(value: object) -> int:
    """Characters of text in a message content (a string or a list of parts)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_text_length(part.get("text")) for part in value if isinstance(part, dict))
    return 0


def _delta_chars(delta: dict[str, Any]) -> int:
    chars = (
        _text_length(delta.get("content"))
        + _text_length(delta.get("reasoning_content"))
        + _text_length(delta.get("refusal"))
    )
    for call in delta.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            chars += _text_length(function.get("arguments"))
    return chars


class RelayEndpoint:
    """One endpoint: ``path`` upstream, ``name`` in the ledger, models of ``kind``."""

    name: str = ""
    path: str = ""
    kind: Kind = "chat"
    streams: bool = False
    required: str = ""
    """A key every successful unary upstream body has."""

    def check(self, body: dict[str, Any]) -> None:
        """Refuse what this endpoint cannot relay."""
        if body.get("stream") and not self.streams:
            raise UnsupportedParameter("stream", "is not supported for hosted models here")

    def upstream_body(self, body: dict[str, Any], upstream_model: str) -> bytes:
        """The request the upstream gets: the client's, with its model's name."""
        return json.dumps({**body, "model": upstream_model}, ensure_ascii=False).encode("utf-8")

    def unary_usage(self, body: dict[str, Any]) -> tuple[int, int] | None:
        return _usage(body, "prompt_tokens", "completion_tokens")

    def estimate(self, request: dict[str, Any], reply: dict[str, Any] | None) -> tuple[int, int]:
        """Approximate usage when the upstream gave none (see the module doc)."""
        messages = request.get("messages") or request.get("input") or ()
        if isinstance(messages, str):
            return estimate_tokens(len(messages)), 0
        prompt = sum(
            _text_length(message.get("content"))
            for message in messages
            if isinstance(message, dict)
        )
        return estimate_tokens(prompt), 0

    def stream_event(self, event: Event, state: StreamState, rewriter: ModelRewriter) -> bytes:
        raise NotImplementedError

    def stream_end(self, state: StreamState) -> bytes:
        """What closes a stream the upstream ended; MalformedStream if it ended early."""
        if not state.finished:
            raise MalformedStream("The upstream ended the stream before it was complete.")
        return b""

    def error_frame(self, error: BaseException, state: StreamState) -> bytes:
        return sse.error_event(error)


class ChatEndpoint(RelayEndpoint):
    name, path, kind, streams, required = (
        "chat.completions",
        "/chat/completions",
        "chat",
        True,
        "choices",
    )

    def upstream_body(self, body: dict[str, Any], upstream_model: str) -> bytes:
        if body.get("stream"):
            options = dict(body.get("stream_options") or {})
            options["include_usage"] = True
            body = {**body, "stream_options": options}
        return super().upstream_body(body, upstream_model)

    def estimate(self, request: dict[str, Any], reply: dict[str, Any] | None) -> tuple[int, int]:
        prompt, _ = super().estimate(request, reply)
        chars = 0
        for choice in (reply or {}).get("choices") or ():
            if isinstance(choice, dict) and isinstance(choice.get("message"), dict):
                chars += _delta_chars(choice["message"])
        return prompt, estimate_tokens(chars)

    def stream_event(self, event: Event, state: StreamState, rewriter: ModelRewriter) -> bytes:
        if event.data == b"[DONE]":
            state.finished = True
            return b""
        obj = parse_json(event.data)
        choices = obj.get("choices")
        if "error" in obj and not choices:
            error = obj["error"] if isinstance(obj["error"], dict) else {"message": obj["error"]}
            raise UpstreamStreamError(f"The upstream failed mid-stream: {error.get('message')}")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                state.estimated += estimate_tokens(_delta_chars(delta))
            state.saw_finish_reason |= bool(choice.get("finish_reason"))
        data = event.data
        usage = _usage(obj, "prompt_tokens", "completion_tokens")
        if usage is not None:
            state.usage = usage
            if not state.client_usage:
                if not choices:
                    return b""  # the usage chunk Portway asked for, not the client
                obj = {key: value for key, value in obj.items() if key != "usage"}
                data = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
        return sse.relayed(rewriter.rewrite(data, obj, obj))

    def stream_end(self, state: StreamState) -> bytes:
        if not (state.finished or state.saw_finish_reason):
            raise MalformedStream("The upstream ended the stream before it was complete.")
        return sse.DONE


class ResponsesEndpoint(RelayEndpoint):
    name, path, kind, streams, required = ("responses", "/responses", "chat", True, "output")
    TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed", "error"})

    def unary_usage(self, body: dict[str, Any]) -> tuple[int, int] | None:
        return _usage(body, "input_tokens", "output_tokens")

    def stream_event(self, event: Event, state: StreamState, rewriter: ModelRewriter) -> bytes:
        obj = parse_json(event.data)
        kind = obj.get("type")
        holder = obj.get("response") if isinstance(obj.get("response"), dict) else None
        if isinstance(obj.get("sequence_number"), int):
            state.last_sequence = obj["sequence_number"]
        if isinstance(obj.get("delta"), str):
            state.estimated += estimate_tokens(len(obj["delta"]))
        if kind in self.TERMINAL:
            state.finished = True
            if holder is not None:
                state.usage = _usage(holder, "input_tokens", "output_tokens") or state.usage
        name = event.name or str(kind).encode()
        return sse.relayed(rewriter.rewrite(event.data, obj, holder), name)

    def error_frame(self, error: BaseException, state: StreamState) -> bytes:
        return sse.responses_error_event(error, state.last_sequence + 1)


class EmbeddingsEndpoint(RelayEndpoint):
    name, path, kind, required = "embeddings", "/embeddings", "embedding", "data"

    def estimate(self, request: dict[str, Any], reply: dict[str, Any] | None) -> tuple[int, int]:
        given = request.get("input")
        texts = [given] if isinstance(given, str) else given if isinstance(given, list) else []
        return estimate_tokens(sum(_text_length(text) for text in texts)), 0


class ImagesEndpoint(RelayEndpoint):
    """Unary, or streamed as OpenAI streams images: ``image_generation.partial_image``
    events, then one ``image_generation.completed`` event per image (with its
    usage), named events without ``[DONE]``. The events carry no model name; they
    are relayed as they come. The ledger gets the completed events' usage, summed
    (or, without usage, the number of images made)."""

    name, path, kind, streams, required = (
        "images.generations",
        "/images/generations",
        "image",
        True,
        "data",
    )
    COMPLETED = "image_generation.completed"

    def unary_usage(self, body: dict[str, Any]) -> tuple[int, int] | None:
        """The upstream's token usage if it reports one; else the number of images."""
        usage = _usage(body, "input_tokens", "output_tokens")
        if usage is not None:
            return usage
        data = body.get("data")
        return (0, len(data)) if isinstance(data, list) else None

    def estimate(self, request: dict[str, Any], reply: dict[str, Any] | None) -> tuple[int, int]:
        return estimate_tokens(_text_length(request.get("prompt"))), 0

    def stream_event(self, event: Event, state: StreamState, rewriter: ModelRewriter) -> bytes:
        if event.data == b"[DONE]":  # not OpenAI's way to end an image stream; tolerated
            state.finished = True
            return b""
        obj = parse_json(event.data)
        kind = obj.get("type")
        if kind == "error" or (kind is None and "error" in obj):
            error = obj.get("error")
            message = error.get("message") if isinstance(error, dict) else error
            raise UpstreamStreamError(f"The upstream failed mid-stream: {message}")
        if kind == self.COMPLETED:
            state.saw_finish_reason = True
            state.estimated += 1  # images made, the ledger's count without usage
            usage = _usage(obj, "input_tokens", "output_tokens")
            if usage is not None:
                before = state.usage or (0, 0)
                state.usage = (before[0] + usage[0], before[1] + usage[1])
        name = event.name or str(kind).encode()
        return sse.relayed(rewriter.rewrite(event.data, obj, obj), name)

    def stream_end(self, state: StreamState) -> bytes:
        if not (state.finished or state.saw_finish_reason):
            raise MalformedStream("The upstream ended the stream before an image was complete.")
        return b""

    def error_frame(self, error: BaseException, state: StreamState) -> bytes:
        """An ``error`` event, which the ``openai`` client raises as an APIError."""
        failure = error if isinstance(error, PortwayError) else PortwayError()
        return sse.encode_named({"type": "error", "error": failure.body()["error"]})


CHAT = ChatEndpoint()
RESPONSES = ResponsesEndpoint()
EMBEDDINGS = EmbeddingsEndpoint()
IMAGES = ImagesEndpoint()
