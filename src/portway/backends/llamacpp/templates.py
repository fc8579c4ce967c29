"""Chat prompt rendering: domain ``Message``s in, one prompt string out.

A template turns a conversation into the text a completion model continues, ending
with the opening of the assistant's turn (the "generation prompt"). Three kinds:

* ``GemmaTemplate``: Gemma's ``<start_of_turn>`` format, written in Python.
* ``JinjaTemplate``: a Hugging Face style Jinja chat template (a GGUF's
  ``tokenizer.chat_template`` or one from the catalogue), rendered in a sandbox.
* ``ChatMLTemplate``: the ``<|im_start|>`` format, the fallback when nothing better
  is known.

``template_for`` picks one for a model.

BOS: the templates written here never put a BOS token in the text, because
llama.cpp's ``tokenize(add_bos=True)`` adds it itself when the model asks for one.
A Jinja template may still emit ``bos_token`` (most do); the backend then tokenizes
without adding another (see ``LlamaCppBackend``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import jinja2
import jinja2.ext
import jinja2.sandbox

from portway.backends.base import Message, ToolCall, ToolSpec, message_dict
from portway.errors import BackendError, InvalidRequest

GEMMA = "gemma"
"""The override name that selects ``GemmaTemplate``."""

MAX_PROMPT_BYTES = 4 * 1024 * 1024
"""A rendered prompt longer than this (in UTF-8) is refused."""

KNOWN_TURN_ENDS = ("<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|end|>", "<|endoftext|>")
"""End-of-turn markers that become stop strings when a Jinja template uses them."""


class ChatTemplate(Protocol):
    """Renders a conversation into a prompt.

    ``stop_strings`` are texts that end the assistant's turn in this format; the
    backend stops generating when the model produces one of them.
    """

    stop_strings: tuple[str, ...]

    def render(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = ()) -> str:
        """The prompt text, ending with the generation prompt for the assistant turn.

        ``tools`` are shown to the model: through the template when it knows tools,
        else as a system instruction (see ``with_tool_instructions``).

        Raises ``InvalidRequest`` when the messages cannot be expressed in this format
        and ``BackendError`` when the template itself fails.
        """
        ...


# --------------------------------------------------------------------------- helpers

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


def _refuse_oversized(length: int) -> None:
    if length > MAX_PROMPT_BYTES:
        raise InvalidRequest(
            f"The rendered prompt is longer than {MAX_PROMPT_BYTES} bytes.", param="messages"
        )


# --------------------------------------------------------------------------- Gemma


class GemmaTemplate:
    """Gemma's turn format.

    ``<start_of_turn>user\\n...<end_of_turn>\\n<start_of_turn>model\\n...<end_of_turn>\\n``
    and finally ``<start_of_turn>model\\n``.

    * Gemma has no system role: system and developer messages are joined with a
      blank line and put, followed by a blank line, before the first user turn (or
      form a user turn of their own when there is none).
    * ``assistant`` becomes ``model``; its tool calls are written as JSON text.
    * A ``tool`` message becomes a user turn saying whose result it is.
    * Contents are stripped of surrounding whitespace, as Gemma's own template does.
    * No ``<bos>``: the tokenizer adds it.
    """

    stop_strings: tuple[str, ...] = ("<end_of_turn>",)

    def render(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = ()) -> str:
        messages = with_tool_instructions(messages, tools)
        instructions = "\n\n".join(
            m.content.strip() for m in messages if m.role in ("system", "developer")
        )
        turns = [_gemma_turn(m) for m in messages if m.role not in ("system", "developer")]
        if instructions:
            turns = _prepend_to_first_user_turn(instructions, turns)
        prompt = (
            "".join(f"<start_of_turn>{role}\n{text}<end_of_turn>\n" for role, text in turns)
            + "<start_of_turn>model\n"
        )
        _refuse_oversized(len(prompt.encode()))
        return prompt


def _gemma_turn(message: Message) -> tuple[str, str]:
    if message.role == "assistant":
        return "model", assistant_text(message).strip()
    if message.role == "tool":
        return "user", tool_result_text(message).strip()
    return "user", message.content.strip()


def _prepend_to_first_user_turn(
    instructions: str, turns: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    for index, (role, text) in enumerate(turns):
        if role == "user":
            merged = f"{instructions}\n\n{text}" if text else instructions
            return [*turns[:index], (role, merged), *turns[index + 1 :]]
    return [("user", instructions), *turns]


# --------------------------------------------------------------------------- ChatML


class ChatMLTemplate:
    """The ChatML format: ``<|im_start|>role\\n...<|im_end|>\\n``, then
    ``<|im_start|>assistant\\n``. ``developer`` is written as ``system``; tool calls as
    JSON text; tool results keep the ``tool`` role with a line saying whose they are.
    """

    stop_strings: tuple[str, ...] = ("<|im_end|>",)

    def render(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = ()) -> str:
        messages = with_tool_instructions(messages, tools)
        prompt = (
            "".join(
                f"<|im_start|>{role}\n{text}<|im_end|>\n"
                for role, text in map(_chatml_turn, messages)
            )
            + "<|im_start|>assistant\n"
        )
        _refuse_oversized(len(prompt.encode()))
        return prompt


def _chatml_turn(message: Message) -> tuple[str, str]:
    if message.role == "developer":
        return "system", message.content
    if message.role == "assistant":
        return "assistant", assistant_text(message)
    if message.role == "tool":
        return "tool", tool_result_text(message)
    return message.role, message.content


# --------------------------------------------------------------------------- Jinja


class TemplateRefusal(jinja2.TemplateError):
    """Raised by a template's ``raise_exception``: it refuses the conversation."""


def _raise_exception(message: str) -> None:
    raise TemplateRefusal(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(
    value: Any,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
    ensure_ascii: bool = False,
) -> str:
    """``tojson`` as chat templates expect it: plain JSON, no HTML escaping."""
    return json.dumps(
        value,
        indent=indent,
        separators=separators,
        sort_keys=sort_keys,
        ensure_ascii=ensure_ascii,
    )


class _SandboxUndefined(jinja2.Undefined):
    """Undefined values print as empty and test false, as chat templates expect, but
    the placeholder for a blocked unsafe attribute raises on any use."""

    __slots__ = ()

    def _blocked(self) -> bool:
        return issubclass(self._undefined_exception, jinja2.exceptions.SecurityError)

    def __str__(self) -> str:
        if self._blocked():
            self._fail_with_undefined_error()
        return super().__str__()

    def __bool__(self) -> bool:
        if self._blocked():
            self._fail_with_undefined_error()
        return super().__bool__()

    def __iter__(self) -> Iterator[Any]:
        if self._blocked():
            self._fail_with_undefined_error()
        return super().__iter__()


def _sandbox() -> jinja2.sandbox.ImmutableSandboxedEnvironment:
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
        undefined=_SandboxUndefined,
        extensions=[jinja2.ext.loopcontrols],
    )
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.filters["tojson"] = _tojson
    return env


class JinjaTemplate:
    """A Hugging Face style Jinja chat template, rendered in an immutable sandbox.

    The template sees ``messages`` (see ``message_dict``), ``add_generation_prompt``
    (always true), ``bos_token``, ``eos_token`` and the globals ``raise_exception``
    and ``strftime_now``. Bounds: the sandbox blocks access to unsafe attributes and
    caps ``range``; the output is refused beyond ``MAX_PROMPT_BYTES``. The template
    source is trusted configuration (a GGUF or the catalogue), not client input.

    Errors: a syntax error raises ``BackendError`` at construction; a call to
    ``raise_exception`` (the template refusing the conversation, e.g. "roles must
    alternate") raises ``InvalidRequest`` with the template's message; any other
    failure while rendering raises ``BackendError``.
    """

    def __init__(
        self,
        source: str,
        bos_token: str = "",
        eos_token: str = "",
        *,
        stop_strings: Iterable[str] = (),
    ) -> None:
        try:
            self._template = _sandbox().from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise BackendError(
                f"The model's chat template is invalid (line {exc.lineno}): {exc.message}"
            ) from exc
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.stop_strings = _jinja_stop_strings(source, eos_token, stop_strings)
        self.knows_tools = "tools" in source
        self.source = source

    def render(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = ()) -> str:
        context: dict[str, Any] = {
            "add_generation_prompt": True,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
        }
        if tools and self.knows_tools:
            context["tools"] = tool_dicts(tools)
        else:
            messages = with_tool_instructions(messages, tools)
        context["messages"] = [message_dict(m) for m in messages]
        try:
            return _bounded_join(self._template.generate(context))
        except TemplateRefusal as exc:
            raise InvalidRequest(str(exc), param="messages") from exc
        except (InvalidRequest, BackendError):
            raise
        except Exception as exc:
            raise BackendError(f"The model's chat template failed: {exc}") from exc


def _bounded_join(chunks: Iterable[str]) -> str:
    """Joins rendered chunks, refusing output beyond ``MAX_PROMPT_BYTES``."""
    parts: list[str] = []
    size = 0
    for chunk in chunks:
        size += len(chunk.encode())
        _refuse_oversized(size)
        parts.append(chunk)
    return "".join(parts)


def _jinja_stop_strings(source: str, eos_token: str, extra: Iterable[str]) -> tuple[str, ...]:
    found = [marker for marker in KNOWN_TURN_ENDS if marker in source]
    candidates = [*extra, *found, eos_token]
    return tuple(dict.fromkeys(s for s in candidates if s))


# --------------------------------------------------------------------------- choice


def template_for(
    metadata: Mapping[str, str],
    override: str | None,
    *,
    family_hint: str | None,
    bos_token: str = "",
    eos_token: str = "",
) -> ChatTemplate:
    """The chat template for a model.

    In order: ``override`` (Jinja source from the catalogue, or the name ``"gemma"``);
    the GGUF's ``tokenizer.chat_template``; Gemma's format when the GGUF's
    ``general.architecture`` (or, without one, ``family_hint``) starts with ``gemma``;
    ChatML. ``bos_token``/``eos_token`` are the texts of the model's special tokens,
    passed to Jinja templates.
    """
    if override is not None:
        if override.strip().lower() == GEMMA:
            return GemmaTemplate()
        return JinjaTemplate(override, bos_token, eos_token)
    embedded = metadata.get("tokenizer.chat_template")
    if embedded:
        return JinjaTemplate(embedded, bos_token, eos_token)
    family = metadata.get("general.architecture") or family_hint or ""
    if family.lower().startswith(GEMMA):
        return GemmaTemplate()
    return ChatMLTemplate()
