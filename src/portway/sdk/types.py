"""What a user's model receives (``GenerateParams``) and may yield from ``generate``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeAlias


@dataclass(frozen=True)
class Text:
    """Answer content."""

    text: str


@dataclass(frozen=True)
class Reasoning:
    """Reasoning, sent to clients as ``reasoning_content``."""

    text: str


@dataclass(frozen=True)
class ToolCall:
    """A whole tool call; a ``dict`` of arguments is sent as its JSON."""

    name: str
    arguments: str | dict[str, Any] = "{}"
    id: str | None = None


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a tool call (as streaming servers send them): the first piece of
    call ``index`` carries its ``name``; the ``arguments`` pieces concatenate."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True)
class Usage:
    """The model's own token counts; they replace Portway's (completion: the total so far)."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None


Output: TypeAlias = str | Text | Reasoning | ToolCall | ToolCallDelta | Usage
"""What ``ModelClass.generate`` may yield."""


@dataclass(frozen=True)
class GenerateParams:
    """The request's sampling and tool parameters, as plain Python values.

    ``tool_choice`` is ``"none"``, ``"auto"``, ``"required"`` or
    ``{"type": "function", "function": {"name": ...}}``; ``tools`` are OpenAI tool
    dicts. Portway enforces ``max_tokens`` and ``stop`` on what the model yields.
    """

    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: str | dict[str, Any] = "auto"
    parallel_tool_calls: bool = True
    response_format: dict[str, Any] | None = None

    @property
    def forced_tool(self) -> str | None:
        """The tool ``tool_choice`` names, if it names one."""
        if isinstance(self.tool_choice, dict):
            name = self.tool_choice.get("function", {}).get("name")
            return str(name) if name else None
        return None
