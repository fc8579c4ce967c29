"""A unary chat completion assembled from the chunks of its stream."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from portway.protocol import chat as wire


@dataclass
class _Choice:
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    logprobs: list[Any] = field(default_factory=list)
    finish_reason: str = "stop"

    def add(self, delta: dict[str, Any]) -> None:
        self.content.append(delta.get("content") or "")
        self.reasoning.append(delta.get("reasoning_content") or "")
        for call in delta.get("tool_calls") or ():
            known = self.calls.setdefault(call["index"], {"id": "", "name": "", "arguments": ""})
            known["id"] = call.get("id") or known["id"]
            known["name"] = call["function"].get("name") or known["name"]
            known["arguments"] += call["function"].get("arguments") or ""

    def message(self) -> wire.ChatCompletionMessage:
        text = "".join(self.content)
        calls = [
            wire.ChatCompletionMessageToolCall(
                id=call["id"],
                function=wire.FunctionCallOut(name=call["name"], arguments=call["arguments"]),
            )
            for _, call in sorted(self.calls.items())
        ]
        return wire.ChatCompletionMessage(
            content=None if calls and not text.strip() else text,
            tool_calls=calls or None,
            reasoning_content="".join(self.reasoning) or None,
        )


@dataclass
class Assembled:
    """Collects stream chunks (``add``) into unary choices (``choice``)."""

    logprobs: bool = False
    usage: wire.CompletionUsage | None = None
    choices: dict[int, _Choice] = field(default_factory=dict)

    def add(self, chunk: dict[str, Any]) -> None:
        if chunk.get("usage"):
            self.usage = wire.CompletionUsage.model_validate(chunk["usage"])
        for choice in chunk["choices"]:
            mine = self.choices.setdefault(choice["index"], _Choice())
            mine.add(choice["delta"])
            if choice["logprobs"]:
                mine.logprobs.extend(choice["logprobs"]["content"])
            if choice["finish_reason"]:
                mine.finish_reason = choice["finish_reason"]

    def choice(self, index: int) -> wire.Choice:
        mine = self.choices.get(index, _Choice())
        return wire.Choice(
            index=index,
            message=mine.message(),
            logprobs=wire.ChoiceLogprobs(content=mine.logprobs) if self.logprobs else None,
            finish_reason=mine.finish_reason,
        )
