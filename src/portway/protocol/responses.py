"""Responses API request models, after OpenAI's ``CreateResponse`` schema (and the
openai client's ``types.responses``). The response object is in
:mod:`portway.protocol.response_object`, its stream events in
:mod:`portway.protocol.response_events`.

Every request field OpenAI defines is declared, so that serving honours it or
refuses it by name. Unions carry tags of the form ``kind:name`` (callable
discriminators), so that an unknown item, tool or part type reaches serving as
an ``Other*`` model and is refused there by name instead of failing validation
with a puzzling message.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)

from portway.protocol.base import RequestModel
from portway.protocol.bounds import (
    MAX_TOOLS,
    JSONSchema,
    check_tools_budget,
    check_tools_size,
)
from portway.protocol.response_object import ItemStatus

Text = Annotated[str, Field(max_length=10 * 1024 * 1024)]

# ---------------------------------------------------------------- request: input


class ContentPart(RequestModel):
    """One part of a message's content. Text parts (``input_text``, ``output_text``,
    ``refusal``) reach the model; other types (``input_image``, ``input_file``,
    ``input_audio``) are refused by name in serving."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str
    text: Text | None = None
    refusal: Text | None = None


Content = Text | list[ContentPart]


class InputMessage(RequestModel):
    """A message: ``EasyInputMessage`` (string content, no type) or a full input or
    output message item, as a client echoes it back."""

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: Content
    id: str | None = Field(default=None, max_length=128)
    status: ItemStatus | None = None
    phase: Literal["commentary", "final_answer"] | None = None


class FunctionCallInput(RequestModel):
    """A function call the model made earlier (``ResponseFunctionToolCall``)."""

    type: Literal["function_call"]
    call_id: str = Field(min_length=1, max_length=128)
    name: str = Field(min_length=1, max_length=128)
    arguments: Text
    id: str | None = Field(default=None, max_length=128)
    status: ItemStatus | None = None


class FunctionCallOutputInput(RequestModel):
    """The result of a function call, answering ``call_id``."""

    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1, max_length=128)
    output: Content
    id: str | None = Field(default=None, max_length=128)
    status: ItemStatus | None = None


class ReasoningInput(RequestModel):
    """Earlier reasoning, echoed back: accepted, but not shown to the model again
    (as with ``reasoning_content`` in chat)."""

    type: Literal["reasoning"]
    id: str | None = Field(default=None, max_length=128)
    summary: list[dict[str, Any]] = []
    content: list[dict[str, Any]] | None = None
    encrypted_content: str | None = None
    status: ItemStatus | None = None


class OtherInput(RequestModel):
    """Any other item type (``item_reference``, ``web_search_call``, ...): refused."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str


def _kind(value: Any, known: frozenset[str], prefix: str, default: str | None) -> str:
    found = value.get("type", default) if isinstance(value, dict) else getattr(value, "type", None)
    return f"{prefix}:{found}" if found in known else f"{prefix}:other"


_ITEM_TYPES = frozenset({"message", "function_call", "function_call_output", "reasoning"})


def _item_kind(value: Any) -> str:
    return _kind(value, _ITEM_TYPES, "item", "message")


InputItem = Annotated[
    Annotated[InputMessage, Tag("item:message")]
    | Annotated[FunctionCallInput, Tag("item:function_call")]
    | Annotated[FunctionCallOutputInput, Tag("item:function_call_output")]
    | Annotated[ReasoningInput, Tag("item:reasoning")]
    | Annotated[OtherInput, Tag("item:other")],
    Discriminator(_item_kind),
]

# ---------------------------------------------------------------- request: tools


class FunctionTool(RequestModel):
    """A function the model may call, in the Responses API's flat shape."""

    type: Literal["function"]
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: JSONSchema | None = None
    strict: bool | None = None
    # Declared so that they can be refused by name.
    defer_loading: bool | None = None
    output_schema: dict[str, Any] | None = None
    allowed_callers: list[str] | None = None


class OtherTool(RequestModel):
    """A hosted tool (``web_search``, ``file_search``, ``mcp``, ...): refused."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str


def _tool_kind(value: Any) -> str:
    return _kind(value, frozenset({"function"}), "tool", None)


Tool = Annotated[
    Annotated[FunctionTool, Tag("tool:function")] | Annotated[OtherTool, Tag("tool:other")],
    Discriminator(_tool_kind),
]


def _tools_within_budget(tools: Any) -> Any:
    """Before any tool is validated: the tools, as sent, within the size bound."""
    if isinstance(tools, list) and len(tools) <= MAX_TOOLS:
        check_tools_budget(
            tool.get("parameters")
            for tool in tools
            if isinstance(tool, dict) and tool.get("type") == "function"
        )
    return tools


def _tools_within_bounds(tools: list[Tool]) -> list[Tool]:
    check_tools_size(tool.parameters for tool in tools if isinstance(tool, FunctionTool))
    return tools


Tools = Annotated[
    list[Tool],
    Field(max_length=MAX_TOOLS),
    AfterValidator(_tools_within_bounds),
    BeforeValidator(_tools_within_budget),
]


class ToolChoiceObject(RequestModel):
    """``{"type": "function", "name"}``, ``{"type": "allowed_tools", "mode", "tools"}``,
    or a hosted tool's choice (refused in serving)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str
    name: str | None = None
    mode: Literal["auto", "required"] | None = None
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=MAX_TOOLS)


ToolChoice = Literal["none", "auto", "required"] | ToolChoiceObject

# ---------------------------------------------------------------- request: the rest


class TextFormat(RequestModel):
    """``text``, ``json_object``, or ``json_schema`` with ``name`` and ``schema``."""

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    schema_: JSONSchema | None = Field(default=None, alias="schema")
    description: str | None = None
    strict: bool | None = None

    @model_validator(mode="after")
    def _schema_fields(self) -> TextFormat:
        if self.type == "json_schema" and (self.name is None or self.schema_ is None):
            raise ValueError("a 'json_schema' format needs 'name' and 'schema'")
        if self.type != "json_schema" and (self.name or self.schema_ or self.strict):
            raise ValueError(f"a '{self.type}' format takes no 'name', 'schema' or 'strict'")
        return self


class TextConfig(RequestModel):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningConfig(RequestModel):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None
    mode: str | None = None
    context: Literal["auto", "current_turn", "all_turns"] | None = None


class StreamOptions(RequestModel):
    include_obfuscation: bool | None = None


MetadataKey = Annotated[str, Field(max_length=64)]
MetadataValue = Annotated[str, Field(max_length=512)]


class CreateResponse(RequestModel):
    """``POST /responses``. Every field of OpenAI's ``CreateResponse`` is declared;
    ``seed`` is a Portway extension (the chat API's), for reproducible sampling."""

    model: str
    input: Text | list[InputItem] | None = None
    instructions: Text | None = None
    previous_response_id: str | None = Field(default=None, max_length=128)
    store: bool | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    tools: Tools | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_tool_calls: int | None = Field(default=None, ge=1)
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    truncation: Literal["auto", "disabled"] | None = None
    metadata: dict[MetadataKey, MetadataValue] | None = Field(default=None, max_length=16)
    user: str | None = Field(default=None, max_length=256)
    safety_identifier: str | None = Field(default=None, max_length=256)
    prompt_cache_key: str | None = Field(default=None, max_length=256)
    service_tier: str | None = None
    include: list[str] | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    seed: int | None = None
    # Declared so they can be refused by name.
    background: bool | None = None
    background_options: dict[str, Any] | None = None
    conversation: str | dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None
    context_management: list[dict[str, Any]] | None = None
    moderation: dict[str, Any] | None = None
    access_programs: dict[str, Any] | None = None
    image: dict[str, Any] | None = None
    prompt_cache_options: dict[str, Any] | None = None
    prompt_cache_retention: str | None = None

    @model_validator(mode="after")
    def _check_combinations(self) -> CreateResponse:
        if self.stream_options is not None and not self.stream:
            raise ValueError("'stream_options' is only allowed when 'stream' is true")
        return self
