"""A Responses request as a chat completion request, refusing by name every
parameter Portway cannot honour; and the request's echo in the response object."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import ValidationError

from portway.errors import InvalidRequest, PortwayError, UnsupportedParameter
from portway.protocol.chat import ChatCompletionRequest
from portway.protocol.responses import (
    CreateResponse,
    FunctionTool,
    ReasoningConfig,
    ToolChoiceObject,
)

LOGPROBS = "message.output_text.logprobs"
SUPPORTED_INCLUDE = frozenset({LOGPROBS})
CHAT_EFFORTS = frozenset({"minimal", "low", "medium", "high"})
HOSTED = "hosted tools are not supported by Portway (only 'function' tools)"


def _reasoning_refusals(reasoning: ReasoningConfig | None) -> dict[str, tuple[bool, str]]:
    if reasoning is None:
        return {}
    summary = "is not supported: Portway returns the reasoning text, not a summary"
    return {
        "reasoning.effort": (
            reasoning.effort is not None and reasoning.effort not in CHAT_EFFORTS,
            "supports only 'minimal', 'low', 'medium' and 'high'",
        ),
        "reasoning.summary": (reasoning.summary not in (None, "auto"), summary),
        "reasoning.generate_summary": (reasoning.generate_summary not in (None, "auto"), summary),
        "reasoning.mode": (reasoning.mode is not None, "is not supported"),
        "reasoning.context": (reasoning.context not in (None, "auto"), "is not supported"),
    }


def _refusals(body: CreateResponse) -> dict[str, str]:
    """Parameters that are set but cannot be honoured, with the reason."""
    unsupported_include = set(body.include or ()) - SUPPORTED_INCLUDE
    checks: dict[str, tuple[bool, str]] = {
        "background": (bool(body.background), "is not supported: responses run in the foreground"),
        "background_options": (body.background_options is not None, "is not supported"),
        "conversation": (
            body.conversation is not None,
            "is not supported by Portway; continue with 'previous_response_id'",
        ),
        "prompt": (body.prompt is not None, "is not supported: Portway has no stored prompts"),
        "context_management": (body.context_management is not None, "is not supported"),
        "moderation": (body.moderation is not None, "is not supported"),
        "access_programs": (body.access_programs is not None, "is not supported"),
        "image": (body.image is not None, "is not supported by this model"),
        "prompt_cache_options": (body.prompt_cache_options is not None, "is not supported"),
        "prompt_cache_retention": (
            body.prompt_cache_retention not in (None, "in_memory"),
            "supports only 'in_memory'",
        ),
        "service_tier": (
            body.service_tier not in (None, "auto", "default"),
            "supports only 'auto' and 'default'",
        ),
        "include": (
            bool(unsupported_include),
            f"supports only '{LOGPROBS}', not {sorted(unsupported_include)}",
        ),
        "text.verbosity": (
            body.text is not None and body.text.verbosity is not None,
            "is not supported by this model",
        ),
        "stream_options.include_obfuscation": (
            bool(body.stream_options and body.stream_options.include_obfuscation),
            "is not supported",
        ),
        **_reasoning_refusals(body.reasoning),
    }
    return {name: reason for name, (refused, reason) in checks.items() if refused}


def check_supported(body: CreateResponse) -> None:
    """Raise UnsupportedParameter for the first parameter that cannot be honoured."""
    refused = _refusals(body)
    if refused:
        name, reason = next(iter(refused.items()))
        raise UnsupportedParameter(name, reason)
    for index, tool in enumerate(body.tools or ()):
        if not isinstance(tool, FunctionTool):
            raise UnsupportedParameter(f"tools[{index}]", f"has type '{tool.type}': {HOSTED}")
        for name in ("defer_loading", "output_schema", "allowed_callers"):
            if getattr(tool, name) is not None:
                raise UnsupportedParameter(f"tools[{index}].{name}", "is not supported")


def _function_tools(body: CreateResponse) -> list[FunctionTool]:
    return [tool for tool in body.tools or () if isinstance(tool, FunctionTool)]


def _allowed(tools: list[FunctionTool], choice: ToolChoiceObject) -> list[FunctionTool]:
    names = set()
    for index, allowed in enumerate(choice.tools or ()):
        if allowed.get("type") != "function" or not isinstance(allowed.get("name"), str):
            where = f"tool_choice.tools[{index}]"
            raise UnsupportedParameter(where, f"must be a function tool: {HOSTED}")
        names.add(allowed["name"])
    unknown = names - {tool.name for tool in tools}
    if unknown:
        raise InvalidRequest(
            f"tool_choice allows {sorted(unknown)}, which are not among 'tools'.",
            param="tool_choice.tools",
        )
    return [tool for tool in tools if tool.name in names]


def _function(tool: FunctionTool) -> dict[str, Any]:
    return tool.model_dump(include={"name", "description", "parameters", "strict"})


def _tool_fields(body: CreateResponse) -> dict[str, Any]:
    """``tools``, ``tool_choice`` and ``parallel_tool_calls`` in chat's shapes."""
    tools, choice = _function_tools(body), body.tool_choice
    chat_choice: Any = choice
    if isinstance(choice, ToolChoiceObject):
        if choice.type == "function" and choice.name:
            chat_choice = {"type": "function", "function": {"name": choice.name}}
        elif choice.type == "allowed_tools" and choice.mode:
            tools, chat_choice = _allowed(tools, choice), choice.mode
        else:
            reason = f"of type '{choice.type}' is not supported: {HOSTED}"
            raise UnsupportedParameter("tool_choice", reason)
    fields: dict[str, Any] = {"tool_choice": chat_choice}
    if tools:
        fields["parallel_tool_calls"] = body.parallel_tool_calls
        fields["tools"] = [
            {
                "type": "function",
                "function": tool.model_dump(
                    include={"name", "description", "parameters", "strict"}
                ),
            }
            for tool in tools
        ]
    return fields


def _response_format(body: CreateResponse) -> dict[str, Any] | None:
    fmt = body.text.format if body.text else None
    if fmt is None or fmt.type != "json_schema":
        return None if fmt is None else {"type": fmt.type}
    schema = fmt.model_dump(
        include={"name", "description", "schema_", "strict"}, by_alias=True, exclude_none=True
    )
    return {"type": "json_schema", "json_schema": schema}


def wants_logprobs(body: CreateResponse) -> bool:
    return LOGPROBS in (body.include or ()) or bool(body.top_logprobs)


def chat_request(body: CreateResponse, messages: list[dict[str, Any]]) -> ChatCompletionRequest:
    """The chat completion that produces the response (always streamed, with usage)."""
    if not messages:
        raise InvalidRequest(
            "The request has no input: give 'input' or 'instructions'.", param="input"
        )
    logprobs = wants_logprobs(body)
    fields: dict[str, Any] = {
        "model": body.model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_completion_tokens": body.max_output_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "seed": body.seed,
        "user": body.user,
        "safety_identifier": body.safety_identifier,
        "prompt_cache_key": body.prompt_cache_key,
        "response_format": _response_format(body),
        "reasoning_effort": body.reasoning.effort if body.reasoning else None,
        "logprobs": logprobs or None,
        "top_logprobs": body.top_logprobs if logprobs else None,
        **_tool_fields(body),
    }
    try:
        return ChatCompletionRequest.model_validate(fields)
    except ValidationError as exc:
        raise InvalidRequest(f"The request cannot be served: {exc.errors()[0]['msg']}") from exc


# Chat parameter names and their names in a Responses request.
_PARAMS = {
    "messages": "input",
    "max_completion_tokens": "max_output_tokens",
    "reasoning_effort": "reasoning.effort",
    "response_format": "text.format",
    "response_format.json_schema.schema": "text.format.schema",
    "logprobs": "include",
}


def responses_param(param: str) -> str:
    """The Responses name of a chat parameter (``response_format`` is ``text.format``)."""
    if param.startswith("tools[") and ".function." in param:
        return param.replace(".function.", ".", 1)
    return _PARAMS.get(param, param)


@contextmanager
def named_for_responses() -> Iterator[None]:
    """Re-raise chat's errors with the parameter names of the Responses request."""
    try:
        yield
    except PortwayError as exc:
        if exc.param is not None:
            renamed = responses_param(exc.param)
            exc.message = exc.message.replace(f"'{exc.param}'", f"'{renamed}'")
            exc.args = (exc.message,)
            exc.param = renamed
        raise


def echo(body: CreateResponse) -> dict[str, Any]:
    """The request's settings as the response object repeats them."""
    fmt = _response_format(body) or {"type": "text"}
    if fmt["type"] == "json_schema":
        fmt = {"type": "json_schema", **fmt["json_schema"]}
    choice = body.tool_choice or "auto"
    return {
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "max_tool_calls": body.max_tool_calls,
        "parallel_tool_calls": body.parallel_tool_calls is not False,
        "previous_response_id": body.previous_response_id,
        "prompt_cache_key": body.prompt_cache_key,
        "reasoning": {
            "effort": body.reasoning.effort if body.reasoning else None,
            "summary": body.reasoning.summary if body.reasoning else None,
        },
        "safety_identifier": body.safety_identifier,
        "store": body.store is not False,
        "temperature": 1.0 if body.temperature is None else body.temperature,
        "text": {"format": fmt},
        "tool_choice": choice if isinstance(choice, str) else choice.model_dump(exclude_none=True),
        "tools": [
            tool.model_dump(include={"type", "name", "description", "parameters", "strict"})
            for tool in _function_tools(body)
        ],
        "top_logprobs": body.top_logprobs or 0,
        "top_p": 1.0 if body.top_p is None else body.top_p,
        "truncation": body.truncation or "disabled",
        "user": body.user,
        "metadata": body.metadata or {},
    }
