"""The domain types every chat backend speaks, and the backend interface."""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import ClassVar, Literal

Role = Literal["system", "developer", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Message:
    role: Role
    content: str
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    logprobs: bool = False
    top_logprobs: int = 0


@dataclass(frozen=True)
class GenerationRequest:
    messages: tuple[Message, ...]
    sampling: SamplingParams
    request_id: str = ""


@dataclass(frozen=True)
class TopLogprob:
    token: str
    bytes: tuple[int, ...]
    logprob: float


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    bytes: tuple[int, ...]
    logprob: float
    top: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class Delta:
    """One step of a generation.

    The first delta of every generation carries ``prompt_tokens`` (and no text):
    it is sent once the prompt has been accepted, so errors about the prompt are
    raised before it. Later deltas carry text and the number of tokens they hold;
    the last one carries ``finish_reason``.
    """

    text: str = ""
    tokens: int = 0
    logprobs: tuple[TokenLogprob, ...] = ()
    finish_reason: FinishReason | None = None
    prompt_tokens: int | None = None


@dataclass(frozen=True)
class Capabilities:
    tools: bool = False
    json_schema: bool = False
    vision: bool = False
    reasoning: bool = False
    logprobs: bool = True
    logit_bias: bool = True
    seed: bool = True


Kind = Literal["chat", "embedding", "image"]


class ModelBackend(abc.ABC):
    """What every backend has: a kind, and a lifetime around the server's."""

    kind: ClassVar[Kind]

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Load the model. Called once before the first request."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Free the model. Called once at shutdown."""


class ChatBackend(ModelBackend):
    """Runs one chat model. ``generate`` is the only way to use it."""

    kind: ClassVar[Kind] = "chat"
    capabilities: Capabilities = Capabilities()
    context_length: int = 0

    @abc.abstractmethod
    def generate(self, request: GenerationRequest) -> AsyncGenerator[Delta, None]:
        """Stream one completion. Closing the iterator cancels the work."""

    @abc.abstractmethod
    def count_tokens(self, text: str) -> int:
        """Tokens the model's tokenizer makes of ``text``."""
