"""Hugging Face style Jinja chat templates (a GGUF's ``tokenizer.chat_template``
or one from the catalogue), rendered in an immutable sandbox."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
import jinja2.sandbox

from portway.backends.base import Message, ToolSpec, message_dict
from portway.backends.llamacpp.template_text import (
    refuse_oversized,
    tool_dicts,
    with_tool_instructions,
)
from portway.errors import BackendError, InvalidRequest

KNOWN_TURN_ENDS = ("<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|end|>", "<|endoftext|>")
"""End-of-turn markers that become stop strings when a Jinja template uses them."""


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
        refuse_oversized(size)
        parts.append(chunk)
    return "".join(parts)


def _jinja_stop_strings(source: str, eos_token: str, extra: Iterable[str]) -> tuple[str, ...]:
    found = [marker for marker in KNOWN_TURN_ENDS if marker in source]
    candidates = [*extra, *found, eos_token]
    return tuple(dict.fromkeys(s for s in candidates if s))
