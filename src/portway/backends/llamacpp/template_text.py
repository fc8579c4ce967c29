"""The texts chat templates share: tools as JSON and as a system instruction, tool
calls and results as text, and the bound on a rendered prompt's size."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from portway.backends.base import Message, ToolCall, ToolSpec
from portway.errors import InvalidRequest

MAX_PROMPT_BYTES = 4 * 1024 * 1024
"""A rendered prompt longer than this (in UTF-8) is refused."""

TOOL_INSTRUCTIONS = """\
You can call these functions (JSON Schema of each one's arguments given):
{functions}
To call a function, reply with only a JSON object {{"name": "<function name>", \
"arguments": {{<arguments>}}}}; to call several, a JSON array of such objects. \
To answer without calling a function, reply normally."""


def tool_dicts(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """Tools in OpenAI's shape, as chat templates that know tools expect them."""
    return [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.parameters or {"type": "object", "properties": {}},
            },
        }
        for tool in tools
    ]


def with_tool_instructions(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> list[Message]:
    """``messages`` with a system message first that describes ``tools`` and the
    generic JSON call format, for templates that know no tools."""
    if not tools:
        return list(messages)
    functions = "\n".join(
        json.dumps(entry["function"], ensure_ascii=False) for entry in tool_dicts(tools)
    )
    return [Message("system", TOOL_INSTRUCTIONS.format(functions=functions)), *messages]


def tool_calls_json(calls: Sequence[ToolCall]) -> str:
    """The text form of an assistant's tool calls, for formats without a native one.

    ``arguments`` is embedded as a JSON value when it parses, else as a string.
    """
    return json.dumps(
        {
            "tool_calls": [
                {"id": call.id, "name": call.name, "arguments": _json_or_text(call.arguments)}
                for call in calls
            ]
        },
        ensure_ascii=False,
    )


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def tool_result_text(message: Message) -> str:
    """A tool message as plain text, saying which call it answers."""
    call_id = message.tool_call_id and f"(id {message.tool_call_id})"
    subject = " ".join(part for part in (message.name, call_id) if part)
    header = f"Result of tool call {subject}:" if subject else "Result of tool call:"
    return f"{header}\n{message.content}"


def assistant_text(message: Message) -> str:
    """An assistant message's content followed by its tool calls as JSON, if any."""
    if not message.tool_calls:
        return message.content
    calls = tool_calls_json(message.tool_calls)
    return f"{message.content}\n{calls}" if message.content else calls


def refuse_oversized(length: int) -> None:
    """Raises ``InvalidRequest`` for a prompt of more than ``MAX_PROMPT_BYTES``."""
    if length > MAX_PROMPT_BYTES:
        raise InvalidRequest(
            f"The rendered prompt is longer than {MAX_PROMPT_BYTES} bytes.", param="messages"
        )
