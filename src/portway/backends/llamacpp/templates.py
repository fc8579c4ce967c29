"""Chat prompt rendering: domain ``Message``s in, one prompt string out.

A template turns a conversation into the text a completion model continues, ending
with the opening of the assistant's turn (the "generation prompt"). Three kinds:

* ``GemmaTemplate``: Gemma's ``<start_of_turn>`` format, written in Python.
* ``JinjaTemplate``: a Hugging Face style Jinja chat template (a GGUF's
  ``tokenizer.chat_template`` or one from the catalogue), rendered in a sandbox.
* ``ChatMLTemplate``: the ``<|im_start|>`` format, the fallback when nothing better
  is known.

``template_for`` picks one for a model. The Jinja sandbox is in ``jinja_template``;
the texts the templates share (tools, tool calls, the size bound) in ``template_text``.

BOS: the templates written here never put a BOS token in the text, because
llama.cpp's ``tokenize(add_bos=True)`` adds it itself when the model asks for one.
A Jinja template may still emit ``bos_token`` (most do); the backend then tokenizes
without adding another (see ``LlamaCppBackend``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from portway.backends.base import Message, ToolSpec
from portway.backends.llamacpp.jinja_template import JinjaTemplate
from portway.backends.llamacpp.template_text import (
    assistant_text,
    refuse_oversized,
    tool_result_text,
    with_tool_instructions,
)

GEMMA = "gemma"
"""The override name that selects ``GemmaTemplate``."""


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
        refuse_oversized(len(prompt.encode()))
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
        refuse_oversized(len(prompt.encode()))
        return prompt


def _chatml_turn(message: Message) -> tuple[str, str]:
    if message.role == "developer":
        return "system", message.content
    if message.role == "assistant":
        return "assistant", assistant_text(message)
    if message.role == "tool":
        return "tool", tool_result_text(message)
    return message.role, message.content


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
