"""Responses input items: checked, normalised to OpenAI's item objects (each with
an id, as stored and listed by ``input_items``), and turned into chat messages.

A normalised item is one of::

    {"type": "message", "id", "role", "status", "content": [text parts]}
    {"type": "function_call", "id", "status", "call_id", "name", "arguments"}
    {"type": "function_call_output", "id", "status", "call_id", "output": str}
    {"type": "reasoning", "id", "status", "summary", "content"}

Stored output items have the same shapes, so a conversation rebuilt from
``previous_response_id`` is one list of normalised items.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from portway.errors import InvalidRequest, UnsupportedParameter
from portway.protocol.responses import (
    Content,
    ContentPart,
    FunctionCallInput,
    FunctionCallOutputInput,
    InputItem,
    InputMessage,
    ReasoningInput,
)

Item = dict[str, Any]
TEXT_PARTS = frozenset({"input_text", "output_text", "refusal"})


def new_id(prefix: str) -> str:
    """An OpenAI-style object id: ``resp_…``, ``msg_…``, ``fc_…``, ``rs_…``."""
    return f"{prefix}_{secrets.token_hex(24)}"


def _part_text(part: ContentPart, where: str) -> str:
    if part.type not in TEXT_PARTS:
        raise UnsupportedParameter(
            where, f"has type '{part.type}', which this model does not accept (text only)"
        )
    text = part.refusal if part.type == "refusal" else part.text
    if text is None:
        field = "refusal" if part.type == "refusal" else "text"
        raise InvalidRequest(f"'{where}.{field}' is required for a text part.", param=where)
    return text


def _texts(content: Content, where: str) -> list[str]:
    if isinstance(content, str):
        return [content]
    return [_part_text(part, f"{where}[{index}]") for index, part in enumerate(content)]


def _message(item: InputMessage, where: str) -> Item:
    texts = _texts(item.content, f"{where}.content")
    if item.role == "assistant":
        parts = [
            {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            for text in texts
        ]
    else:
        parts = [{"type": "input_text", "text": text} for text in texts]
    return {
        "type": "message",
        "id": item.id or new_id("msg"),
        "role": item.role,
        "status": item.status or "completed",
        "content": parts,
    }


def _normalise(item: InputItem, where: str) -> Item:
    if isinstance(item, InputMessage):
        return _message(item, where)
    if isinstance(item, FunctionCallInput):
        fields = item.model_dump(include={"call_id", "name", "arguments"})
        return {"type": item.type, "id": item.id or new_id("fc"), "status": "completed", **fields}
    if isinstance(item, FunctionCallOutputInput):
        output = "".join(_texts(item.output, f"{where}.output"))
        return {
            "type": item.type,
            "id": item.id or new_id("fco"),
            "status": "completed",
            "call_id": item.call_id,
            "output": output,
        }
    if isinstance(item, ReasoningInput):
        fields = item.model_dump(include={"summary", "content"}, exclude_none=True)
        return {"type": item.type, "id": item.id or new_id("rs"), "status": "completed", **fields}
    raise UnsupportedParameter(
        where, f"has type '{item.type}', which Portway does not support as input"
    )


def normalise(value: str | list[InputItem] | None) -> list[Item]:
    """The request's ``input`` as normalised items; refuses, by name, item types
    and content parts the model cannot take."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [InputMessage(role="user", content=value)]
    return [_normalise(item, f"input[{index}]") for index, item in enumerate(value)]


def check_conversation(history: Sequence[Item], current: Sequence[Item]) -> None:
    """``current`` (the request's items) may follow ``history``: no item id is
    given twice, and every function call output answers an earlier call."""
    seen = {item["id"] for item in history}
    called = {item["call_id"] for item in history if item["type"] == "function_call"}
    for index, item in enumerate(current):
        if item["id"] in seen:
            raise InvalidRequest(
                f"Duplicate item found with id '{item['id']}': the conversation already "
                "holds it. Remove duplicate items from your input and try again.",
                param=f"input[{index}]",
            )
        seen.add(item["id"])
        if item["type"] == "function_call":
            called.add(item["call_id"])
        elif item["type"] == "function_call_output" and item["call_id"] not in called:
            raise InvalidRequest(
                f"No tool call found for function call output with call_id '{item['call_id']}'.",
                param=f"input[{index}].call_id",
            )


def turns(items: Sequence[Item]) -> list[list[Item]]:
    """``items`` cut before each user message: what ``truncation: "auto"`` drops,
    oldest first. A function call and its output are always in one turn."""
    found: list[list[Item]] = []
    for item in items:
        if not found or (item["type"] == "message" and item["role"] == "user"):
            found.append([])
        found[-1].append(item)
    return found


def _content(item: Item) -> str:
    return "".join(part.get("text") or part.get("refusal") or "" for part in item["content"])


def to_messages(instructions: str | None, items: Sequence[Item]) -> list[dict[str, Any]]:
    """Chat messages for ``items``: ``instructions`` first, as a system message;
    a function call joins the assistant message before it; reasoning is left out."""
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    names: dict[str, str] = {}
    for item in items:
        kind = item["type"]
        if kind == "message":
            messages.append({"role": item["role"], "content": _content(item)})
        elif kind == "function_call":
            names[item["call_id"]] = item["name"]
            last = messages[-1] if messages else {}
            if last.get("role") != "assistant":
                last = {"role": "assistant", "content": None}
                messages.append(last)
            call = {"name": item["name"], "arguments": item["arguments"]}
            last.setdefault("tool_calls", []).append(
                {"id": item["call_id"], "type": "function", "function": call}
            )
        elif kind == "function_call_output":
            call_id = item["call_id"]
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": call_id,
                    "name": names.get(call_id),
                    "content": item["output"],
                }
            )
    return messages
