"""Turn a ``ChatCompletionRequest`` into domain messages and sampling parameters,
refusing by name every parameter the model or Portway cannot honour."""

from __future__ import annotations

from typing import Any

from portway.backends.base import Capabilities, Message, SamplingParams, ToolCall
from portway.errors import InvalidRequest, UnsupportedParameter
from portway.protocol.chat import (
    AssistantMessage,
    ChatCompletionRequest,
    ChatMessage,
    Content,
    ToolMessage,
)

NOT_YET = "is not supported by Portway yet"


def _refusals(request: ChatCompletionRequest) -> dict[str, Any]:
    """Parameters that are set but cannot be honoured, with the reason."""
    checks: dict[str, tuple[bool, str]] = {
        "tools": (request.tools is not None, NOT_YET),
        "tool_choice": (request.tool_choice is not None, NOT_YET),
        "parallel_tool_calls": (request.parallel_tool_calls is not None, NOT_YET),
        "functions": (request.functions is not None, "is deprecated; use 'tools'"),
        "function_call": (request.function_call is not None, "is deprecated; use 'tool_choice'"),
        "response_format": (
            request.response_format not in (None, {"type": "text"}),
            NOT_YET + " (only {'type': 'text'})",
        ),
        "reasoning_effort": (
            request.reasoning_effort is not None,
            "is not supported by this model",
        ),
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
    for name, reason in _refusals(request).items():
        raise UnsupportedParameter(name, reason)
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
        return Message("tool", text, tool_call_id=message.tool_call_id)
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
        if not key.isdigit() or len(key) > 9:
            raise InvalidRequest(
                f"logit_bias keys are token ids; '{key[:32]}' is not one.", param="logit_bias"
            )
        bias[int(key)] = value
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
