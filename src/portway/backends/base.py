"""The domain types every chat backend speaks, and the backend interface."""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

from portway.errors import InvalidRequest

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


def message_dict(message: Message) -> dict[str, Any]:
    """A message in OpenAI's shape, as chat templates expect it.

    Optional keys (``name``, ``tool_call_id``, ``tool_calls``) are present only when
    set, so ``is defined`` tests in templates behave as with OpenAI-style input.
    ``tool_calls[].function.arguments`` is the JSON string, as in OpenAI's API.
    """
    result: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.name is not None:
        result["name"] = message.name
    if message.tool_call_id is not None:
        result["tool_call_id"] = message.tool_call_id
    if message.tool_calls:
        result["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in message.tool_calls
        ]
    return result


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
class ToolSpec:
    """A function the model may call; ``parameters`` is its arguments' JSON Schema."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    strict: bool = False


@dataclass(frozen=True)
class Grammar:
    """What constrained decoding enforces: an llguidance grammar.

    ``param`` names the request field it came from, for the 400 a backend raises
    if it cannot compile the grammar after all.
    """

    source: str
    description: str = ""
    param: str | None = None


ToolMode = Literal["none", "auto", "required", "named"]


@dataclass(frozen=True)
class GenerationRequest:
    messages: tuple[Message, ...]
    sampling: SamplingParams
    request_id: str = ""
    tools: tuple[ToolSpec, ...] = ()
    """Tools to show the model (rendered by the chat template); empty: none."""
    constraint: Grammar | None = None
    """Set only for backends whose ``capabilities.grammar`` is true."""
    tool_mode: ToolMode = "auto"
    """``tool_choice``: ``named`` forces the function ``tool_name``."""
    tool_name: str | None = None
    parallel_tool_calls: bool = True
    response_format: dict[str, Any] | None = None
    """``response_format`` as the client sent it, when it asks for JSON."""
    user: str = ""
    """Who asks (a user or token id): backends that queue admit users fairly."""


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
class CallPiece:
    """Part of a tool call a model reports as such (not as text to parse).

    The first piece of a call (by ``index``, from 0) carries its ``name`` and may
    carry an ``id``; the ``arguments`` of a call's pieces concatenate to its JSON.
    """

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True)
class Delta:
    """One step of a generation.

    The first delta of every generation carries ``prompt_tokens`` (and no text):
    it is sent once the prompt has been accepted, so errors about the prompt are
    raised before it. Later deltas carry text and the number of tokens they hold;
    the last one carries ``finish_reason``. A later ``prompt_tokens`` replaces the
    first (a model that learns its exact prompt count only as it ends). Backends
    that know the kind of their output put reasoning in ``reasoning`` and tool
    calls in ``calls``; ``text`` is then the answer's content (still searched for
    calls in the backend's ``tool_family`` unless that is ``typed``).
    """

    text: str = ""
    tokens: int = 0
    logprobs: tuple[TokenLogprob, ...] = ()
    finish_reason: FinishReason | None = None
    prompt_tokens: int | None = None
    reasoning: str = ""
    calls: tuple[CallPiece, ...] = ()


@dataclass(frozen=True)
class Capabilities:
    tools: bool = False
    json_schema: bool = False
    vision: bool = False
    reasoning: bool = False
    reasoning_effort: bool = False
    logprobs: bool = True
    logit_bias: bool = True
    seed: bool = True
    grammar: bool = True
    """Whether the backend enforces ``GenerationRequest.constraint``; if not, it
    gets ``tool_mode`` and ``response_format`` to honour as it can."""


Kind = Literal["chat", "embedding", "image"]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
"""The first bytes of every PNG: image backends answer with PNGs."""


class ModelBackend(abc.ABC):
    """What every backend has: a kind, and a lifetime around the server's."""

    kind: ClassVar[Kind]

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Load the model. Called once before the first request."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Free the model. Called once at shutdown."""


Built = tuple[ModelBackend, str]
"""What a catalogue builder returns: a backend, not yet started, and the id of
the version it serves."""


class ChatBackend(ModelBackend):
    """Runs one chat model. ``generate`` is the only way to use it."""

    kind: ClassVar[Kind] = "chat"
    capabilities: Capabilities = Capabilities()
    context_length: int = 0
    tool_family: str = "json"
    """How the model writes tool calls (a parser family of ``portway.toolcalls``),
    or ``typed``: it reports calls in ``Delta.calls`` and its text is all content."""
    reasons: bool = False
    """Whether the model's output opens with ``<think>`` reasoning."""
    reasoning_opened_by_template: bool = False
    """Whether the prompt already opened ``<think>``, so output starts inside it."""

    @abc.abstractmethod
    def generate(self, request: GenerationRequest) -> AsyncGenerator[Delta, None]:
        """Stream one completion. Closing the iterator cancels the work."""

    async def generate_choices(
        self, request: GenerationRequest, n: int
    ) -> list[AsyncIterator[Delta]]:
        """``n`` completions of ``request``; choice ``i`` samples with ``seed + i``.

        Each stream is as ``generate``'s; close every one. Here: ``n`` calls of
        ``generate`` (each raises its errors at its first item); a backend may
        share the prompt's evaluation between them and raise before returning.
        """
        return [self.generate(choice_request(request, index)) for index in range(n)]

    @abc.abstractmethod
    def count_tokens(self, text: str) -> int:
        """Tokens the model's tokenizer makes of ``text``."""


def choice_request(request: GenerationRequest, index: int) -> GenerationRequest:
    """The request of choice ``index``: its seed is ``seed + index``."""
    seed = request.sampling.seed
    if seed is None or not index:
        return request
    return replace(request, sampling=replace(request.sampling, seed=seed + index))


class EmbeddingBackend(ModelBackend):
    """Runs one embedding model: texts in, one vector per text out.

    Every method does its work off the event loop; ``embed`` may gather the
    texts of concurrent calls into one batch.
    """

    kind: ClassVar[Kind] = "embedding"
    dimensions: int = 0
    """The length of the vectors ``embed`` returns."""
    max_input_tokens: int = 0
    """The most tokens one text may hold, as ``count_tokens`` counts them."""
    vocab_size: int = 0
    """``decode`` takes token ids from 0 to ``vocab_size - 1``."""
    shortening: bool = False
    """Whether its vectors may be shortened (truncated, then re-normalised)."""

    @abc.abstractmethod
    async def count_tokens(self, texts: list[str]) -> list[int]:
        """The tokens of each text, without the model's special tokens."""

    @abc.abstractmethod
    async def decode(self, ids: list[list[int]]) -> list[str]:
        """The text of each list of token ids (each id below ``vocab_size``)."""

    @abc.abstractmethod
    async def embed(self, texts: list[str]) -> list[list[float]]:
        """One vector of ``dimensions`` floats per text (none over the limit)."""


@dataclass(frozen=True)
class ImageCapabilities:
    """The values an image model accepts; ``auto`` lets the model choose."""

    qualities: tuple[str, ...] = ("auto",)
    styles: tuple[str, ...] = ()
    backgrounds: tuple[str, ...] = ("auto",)
    output_formats: tuple[str, ...] = ("png",)
    default_size: tuple[int, int] = (512, 512)
    min_side: int = 64
    max_side: int = 1024
    side_multiple: int = 8


@dataclass(frozen=True)
class ImageRequest:
    prompt: str
    n: int
    width: int
    height: int
    request_id: str = ""


@dataclass(frozen=True)
class GeneratedImage:
    png: bytes
    revised_prompt: str | None = None


class ImageBackend(ModelBackend):
    """Runs one image model."""

    kind: ClassVar[Kind] = "image"
    capabilities: ImageCapabilities = ImageCapabilities()
    max_prompt_tokens: int = 0
    """The most tokens a prompt may hold; 0: no limit."""
    url_ttl: int = 3600
    """Seconds a ``url`` result of this model stays reachable."""

    @abc.abstractmethod
    def count_tokens(self, text: str) -> int:
        """Tokens the model's text encoder makes of ``text``."""

    def prompt_tokens(self, prompt: str) -> int:
        """The prompt's tokens; 400 when the model's text encoder would have to cut it."""
        tokens = self.count_tokens(prompt)
        limit = self.max_prompt_tokens
        if limit and tokens > limit:
            raise InvalidRequest(
                f"This model's maximum prompt length is {limit} tokens, but the prompt holds "
                f"{tokens}. Please shorten it: Portway does not truncate prompts.",
                param="prompt",
                code="context_length_exceeded",
            )
        return tokens

    @abc.abstractmethod
    async def generate(self, request: ImageRequest) -> list[GeneratedImage]:
        """``request.n`` PNG images; cancelling the call stops the work at its next step."""


class AttachableBackend(ModelBackend):
    """A model served by processes that attach to this server and may leave
    (runners): the registry serves a version only while it is ``attached``."""

    @property
    @abc.abstractmethod
    def attached(self) -> bool:
        """Whether something that serves the model is attached now."""


class RelayBackend(ModelBackend):
    """A model served by another OpenAI-compatible server: the API layer hands
    the client's request body to the relay (``portway.serving.relay``) instead of
    the serving layer, whatever the endpoint. It has no ``generate``: nothing is
    generated here. Its ``kind`` says which endpoints the upstream model serves."""

    @abc.abstractmethod
    def health(self) -> list[dict[str, Any]]:
        """The state of each upstream endpoint, for ``/health`` (admins only)."""
