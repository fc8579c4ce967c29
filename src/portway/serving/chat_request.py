"""Turn a ``ChatCompletionRequest`` into domain messages and sampling parameters,
refusing by name every parameter the model or Portway cannot honour."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Literal

from portway.backends.base import (
    Capabilities,
    ChatBackend,
    Grammar,
    Message,
    SamplingParams,
    ToolCall,
    ToolMode,
    ToolSpec,
)
from portway.constrain.either import calls_or_answer
from portway.constrain.schema import check_json_schema
from portway.digits import ascii_decimal
from portway.errors import InvalidRequest, UnsupportedParameter
from portway.protocol.chat import (
    AssistantMessage,
    ChatCompletionRequest,
    ChatMessage,
    Content,
    JSONObjectFormat,
    JSONSchemaResponseFormat,
    NamedToolChoice,
    ToolMessage,
)

NOT_YET = "is not supported by Portway yet"


@dataclass(frozen=True)
class ToolUse:
    """What the request allows the model to do with tools."""

    tools: tuple[ToolSpec, ...] = ()
    mode: ToolMode = "none"
    name: str | None = None
    parallel: bool = True

    @property
    def active(self) -> bool:
        return bool(self.tools) and self.mode != "none"

    @property
    def forced(self) -> bool:
        return self.mode in ("required", "named")


def _constrained_format(request: ChatCompletionRequest) -> bool:
    return isinstance(request.response_format, JSONObjectFormat | JSONSchemaResponseFormat)


def _refusals(request: ChatCompletionRequest) -> dict[str, Any]:
    """Parameters that are set but cannot be honoured, with the reason."""
    checks: dict[str, tuple[bool, str]] = {
        "functions": (request.functions is not None, "is deprecated; use 'tools'"),
        "function_call": (request.function_call is not None, "is deprecated; use 'tool_choice'"),
        "modalities": (request.modalities not in (None, ["text"]), "supports only ['text']"),
        "audio": (request.audio is not None, "is not supported by this model"),
        "prediction": (request.prediction is not None, NOT_YET),
        "web_search_options": (request.web_search_options is not None, "is not supported"),
        "verbosity": (request.verbosity is not None, "is not supported by this model"),
        "store": (bool(request.store), "is not supported: Portway does not store chat completions"),
        "metadata": (
            request.metadata is not None,
            "is only used with 'store', which is not supported",
        ),
        "service_tier": (
            request.service_tier not in (None, "auto", "default"),
            "supports only 'auto' and 'default'",
        ),
        "stream_options.include_obfuscation": (
            bool(request.stream_options and request.stream_options.include_obfuscation),
            "is not supported",
        ),
    }
    return {name: reason for name, (refused, reason) in checks.items() if refused}


def check_supported(request: ChatCompletionRequest, capabilities: Capabilities) -> None:
    """Raise UnsupportedParameter for the first parameter that cannot be honoured."""
    refused = _refusals(request)
    if refused:
        name, reason = next(iter(refused.items()))
        raise UnsupportedParameter(name, reason)
    if request.tools and not capabilities.tools:
        raise UnsupportedParameter("tools", "is not supported by this model")
    if _constrained_format(request) and not capabilities.json_schema:
        raise UnsupportedParameter("response_format", "is not supported by this model")
    if request.reasoning_effort is not None and not capabilities.reasoning_effort:
        raise UnsupportedParameter("reasoning_effort", "is not supported by this model")
    if request.logprobs and not capabilities.logprobs:
        raise UnsupportedParameter("logprobs", "is not supported by this model")
    if request.logit_bias and not capabilities.logit_bias:
        raise UnsupportedParameter("logit_bias", "is not supported by this model")
    if request.seed is not None and not capabilities.seed:
        raise UnsupportedParameter("seed", "is not supported by this model")


def _text_of(content: Content | None, param: str, capabilities: Capabilities) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for index, part in enumerate(content):
        where = f"{param}[{index}]"
        if part.type != "text":
            reason = f"has type '{part.type}', which this model does not accept (text only)"
            raise UnsupportedParameter(where, reason)
        if part.text is None:
            raise InvalidRequest(f"'{where}.text' is required for a text part.", param=where)
        texts.append(part.text)
    return "".join(texts)


def _to_message(message: ChatMessage, index: int, capabilities: Capabilities) -> Message:
    param = f"messages[{index}].content"
    text = _text_of(message.content, param, capabilities)
    if isinstance(message, AssistantMessage):
        calls = tuple(
            ToolCall(call.id, call.function.name, call.function.arguments)
            for call in message.tool_calls or ()
        )
        return Message("assistant", text, name=message.name, tool_calls=calls)
    if isinstance(message, ToolMessage):
        return Message("tool", text, name=message.name, tool_call_id=message.tool_call_id)
    return Message(message.role, text, name=message.name)


def _check_tool_results(messages: list[ChatMessage]) -> None:
    """Every tool message answers a call made by an earlier assistant message."""
    called: set[str] = set()
    for index, message in enumerate(messages):
        if isinstance(message, AssistantMessage):
            called.update(call.id for call in message.tool_calls or ())
        elif isinstance(message, ToolMessage) and message.tool_call_id not in called:
            raise InvalidRequest(
                f"The tool message's tool_call_id '{message.tool_call_id}' does not answer any "
                "tool call of an earlier assistant message.",
                param=f"messages[{index}].tool_call_id",
            )


def to_messages(request: ChatCompletionRequest, capabilities: Capabilities) -> tuple[Message, ...]:
    _check_tool_results(request.messages)
    return tuple(
        _to_message(message, index, capabilities) for index, message in enumerate(request.messages)
    )


def _logit_bias(request: ChatCompletionRequest) -> dict[int, float]:
    bias: dict[int, float] = {}
    for key, value in (request.logit_bias or {}).items():
        token = ascii_decimal(key, max_digits=9)
        if token is None:
            raise InvalidRequest(
                f"logit_bias keys are token ids; '{key[:32]}' is not one.", param="logit_bias"
            )
        bias[token] = value
    return bias


def to_sampling(request: ChatCompletionRequest) -> SamplingParams:
    stop = (request.stop,) if isinstance(request.stop, str) else tuple(request.stop or ())
    return SamplingParams(
        max_tokens=request.max_completion_tokens or request.max_tokens,
        temperature=1.0 if request.temperature is None else request.temperature,
        top_p=1.0 if request.top_p is None else request.top_p,
        stop=tuple(item for item in stop if item),
        seed=request.seed,
        presence_penalty=request.presence_penalty or 0.0,
        frequency_penalty=request.frequency_penalty or 0.0,
        logit_bias=_logit_bias(request),
        logprobs=bool(request.logprobs),
        top_logprobs=request.top_logprobs or 0,
    )


def _tool_spec(tool: Any, index: int) -> ToolSpec:
    function = tool.function
    parameters = function.parameters or {"type": "object", "properties": {}}
    check_json_schema(parameters, param=f"tools[{index}].function.parameters")
    return ToolSpec(function.name, function.description or "", parameters, bool(function.strict))


async def checked_tool_use(request: ChatCompletionRequest) -> ToolUse:
    """``to_tool_use``, with the tools' JSON Schema meta-validation (pure Python,
    growing with the schemas' size) on a worker thread, so that the event loop
    keeps serving other requests meanwhile."""
    if not request.tools:
        return to_tool_use(request)
    return await asyncio.to_thread(to_tool_use, request)


def to_tool_use(request: ChatCompletionRequest) -> ToolUse:
    """Validate ``tools``, ``tool_choice`` and ``parallel_tool_calls`` together.
    Blocks while it meta-validates the tools' schemas: see ``checked_tool_use``."""
    if not request.tools:
        for name in ("tool_choice", "parallel_tool_calls"):
            value = getattr(request, name)
            if value is not None and value != "none":
                raise InvalidRequest(
                    f"'{name}' is only allowed when 'tools' are specified.", param=name
                )
        return ToolUse()
    specs: list[ToolSpec] = []
    for index, tool in enumerate(request.tools):
        if any(spec.name == tool.function.name for spec in specs):
            raise InvalidRequest(
                f"Tool names must be unique; '{tool.function.name}' is given twice.",
                param=f"tools[{index}].function.name",
            )
        specs.append(_tool_spec(tool, index))
    choice = request.tool_choice or "auto"
    parallel = request.parallel_tool_calls is not False
    if isinstance(choice, NamedToolChoice):
        if choice.function.name not in {spec.name for spec in specs}:
            raise InvalidRequest(
                f"tool_choice names '{choice.function.name}', which is not among 'tools'.",
                param="tool_choice",
            )
        return ToolUse(tuple(specs), "named", choice.function.name, parallel=False)
    return ToolUse(tuple(specs), choice, parallel=parallel)


def constraint_for(
    request: ChatCompletionRequest, tool_use: ToolUse, backend: ChatBackend
) -> Grammar | None:
    """What constrained decoding must enforce: a forced tool call, or the
    response format's JSON (after free reasoning, for reasoning models); None
    when the model is free. Compiling may take a while: call it off the loop."""
    from portway import constrain

    grammar = _grammar_for(request, tool_use, backend.tool_family)
    if grammar is not None and backend.reasons:
        return constrain.allow_reasoning(
            grammar, starts_inside=backend.reasoning_opened_by_template
        )
    return grammar


def _grammar_for(request: ChatCompletionRequest, tool_use: ToolUse, family: str) -> Grammar | None:
    from portway import constrain

    if tool_use.forced:
        choice: Literal["required", "named"] = "named" if tool_use.mode == "named" else "required"
        return constrain.tool_call_grammar(
            tool_use.tools,
            family=family,
            choice=choice,
            name=tool_use.name,
            parallel=tool_use.parallel,
        )
    answer = _answer_grammar(request)
    if answer is None or not tool_use.active:
        return answer
    calls = constrain.tool_call_grammar(
        tool_use.tools, family=family, choice="required", name=None, parallel=tool_use.parallel
    )
    return calls_or_answer(calls, answer)


def json_response_format(request: ChatCompletionRequest) -> dict[str, Any] | None:
    """``response_format`` as sent, when it asks for JSON (else None)."""
    if not _constrained_format(request):
        return None
    assert request.response_format is not None
    return request.response_format.model_dump(mode="json", by_alias=True, exclude_none=True)


def _answer_grammar(request: ChatCompletionRequest) -> Grammar | None:
    """The grammar of ``response_format``, if it asks for JSON."""
    from portway import constrain

    fmt = request.response_format
    if isinstance(fmt, JSONObjectFormat):
        return constrain.json_object_grammar()
    if isinstance(fmt, JSONSchemaResponseFormat):
        schema = fmt.json_schema.schema_ or {"type": "object"}
        return constrain.json_schema_grammar(schema, param="response_format.json_schema.schema")
    return None
