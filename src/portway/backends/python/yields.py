"""Between a ``GenerationRequest`` and a user model: plain-dict messages and
``GenerateParams`` in, the model's yields out as ``Delta``s."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from portway.backends.base import (
    CallPiece,
    Delta,
    FinishReason,
    GenerationRequest,
    Message,
    message_dict,
)
from portway.backends.textstream import StopMatcher
from portway.errors import ModelFailed
from portway.sdk.types import GenerateParams, Reasoning, Text, ToolCall, ToolCallDelta, Usage


def to_dicts(messages: Iterable[Message]) -> list[dict[str, Any]]:
    """OpenAI-shaped plain dicts."""
    return [message_dict(message) for message in messages]


def request_params(request: GenerationRequest) -> GenerateParams:
    sampling = request.sampling
    choice: str | dict[str, Any] = request.tool_mode
    if request.tool_mode == "named":
        choice = {"type": "function", "function": {"name": request.tool_name}}
    tools = [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.parameters,
                "strict": tool.strict,
            },
        }
        for tool in request.tools
    ]
    return GenerateParams(
        max_tokens=sampling.max_tokens,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        stop=list(sampling.stop),
        seed=sampling.seed,
        presence_penalty=sampling.presence_penalty,
        frequency_penalty=sampling.frequency_penalty,
        tools=tools,
        tool_choice=choice if tools else "none",
        parallel_tool_calls=request.parallel_tool_calls,
        response_format=request.response_format,
    )


def _fitting_prefix(text: str, limit: int, count: Callable[[str], int]) -> str:
    """The longest prefix of ``text`` of at most ``limit`` tokens."""
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if count(text[:middle]) <= limit:
            low = middle
        else:
            high = middle - 1
    return text[:low]


@dataclass
class YieldConverter:
    """Turns one generation's yields into deltas; ``finished`` once ``max_tokens``
    or a stop string is reached."""

    count: Callable[[str], int]
    budget: int
    params: GenerateParams
    model: str
    cut: bool = True
    """Whether to cut text at the budget (False: the model stops by itself)."""
    tokens: int = 0
    finish_reason: FinishReason | None = None
    _stops: StopMatcher = field(init=False)
    _calls: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._stops = StopMatcher(self.params.stop)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def feed(self, item: object) -> list[Delta]:
        if isinstance(item, str | Text):
            return self._text(item if isinstance(item, str) else item.text)
        if isinstance(item, Reasoning):
            return self._counted(Delta(reasoning=item.text), item.text) if item.text else []
        if isinstance(item, ToolCall):
            return [self._call(item)]
        if isinstance(item, ToolCallDelta):
            return [self._call_piece(item)]
        if isinstance(item, Usage):
            return self._usage(item)
        raise ModelFailed(
            f"TypeError: {self.model} yielded a {type(item).__name__}; a model yields str, "
            "Text, Reasoning, ToolCall, ToolCallDelta or Usage"
        )

    def finish(self) -> Delta:
        """The last delta: what stop matching held back, and the finish reason.
        A generation that ends without the call ``tool_choice`` demanded fails."""
        forced = self.params.tool_choice == "required" or self.params.forced_tool
        if forced and not self._calls and self.finish_reason is None:
            raise ModelFailed(
                f"ValueError: {self.model} made no tool call, and the request's "
                "tool_choice requires one"
            )
        held = "" if self.finished else self._stops.flush()
        reason = self.finish_reason or "stop"
        return Delta(text=held, tokens=self.count(held) if held else 0, finish_reason=reason)

    def _text(self, text: str) -> list[Delta]:
        safe, stopped = self._stops.feed(text)
        if stopped:
            self.finish_reason = "stop"
        return self._counted(Delta(text=safe), safe) if safe else []

    def _counted(self, delta: Delta, text: str) -> list[Delta]:
        tokens = self.count(text)
        remaining = self.budget - self.tokens
        if self.cut and tokens >= remaining:
            self.finish_reason = "length"
            if tokens > remaining:
                text = _fitting_prefix(text, remaining, self.count)
                tokens = self.count(text) if text else 0
                delta = replace(delta, reasoning=text) if delta.reasoning else Delta(text=text)
            if not text:
                return []
        self.tokens += tokens
        return [Delta(text=delta.text, reasoning=delta.reasoning, tokens=tokens)]

    def _check_tool(self, name: str) -> None:
        offered = [tool["function"]["name"] for tool in self.params.tools]
        forced = self.params.forced_tool
        if forced and name != forced:
            raise ModelFailed(
                f"ValueError: {self.model} called the tool {name!r}; the request's "
                f"tool_choice names {forced!r}"
            )
        if name not in offered:
            raise ModelFailed(
                f"ValueError: {self.model} called the tool {name!r}, which the request "
                f"did not offer (tools: {offered or 'none'})"
            )

    def _call(self, call: ToolCall) -> Delta:
        self._check_tool(call.name)
        index = max(self._calls, default=-1) + 1
        self._calls[index] = call.name
        arguments = call.arguments
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        piece = CallPiece(index, id=call.id, name=call.name, arguments=arguments)
        tokens = self.count(arguments)
        self.tokens += tokens
        return Delta(calls=(piece,), tokens=tokens)

    def _call_piece(self, piece: ToolCallDelta) -> Delta:
        if piece.index not in self._calls:
            if not piece.name:
                raise ModelFailed(
                    f"ValueError: {self.model}'s first ToolCallDelta of call {piece.index} "
                    "has no name"
                )
            self._check_tool(piece.name)
            self._calls[piece.index] = piece.name
        call = CallPiece(piece.index, id=piece.id, name=piece.name, arguments=piece.arguments)
        tokens = self.count(piece.arguments) if piece.arguments else 0
        self.tokens += tokens
        return Delta(calls=(call,), tokens=tokens)

    def _usage(self, usage: Usage) -> list[Delta]:
        deltas = []
        if usage.prompt_tokens is not None:
            deltas.append(Delta(prompt_tokens=int(usage.prompt_tokens)))
        if usage.completion_tokens is not None:
            difference = int(usage.completion_tokens) - self.tokens
            self.tokens = int(usage.completion_tokens)
            if difference:
                deltas.append(Delta(tokens=difference))
            if self.tokens >= self.budget:
                self.finish_reason = "length"
        return deltas
