"""Building blocks for the SDK tests: model folders and chat backends."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from portway.backends.base import (
    ChatBackend,
    Delta,
    GenerationRequest,
    Message,
    SamplingParams,
    ToolSpec,
)
from portway.backends.python.model import PythonChatBackend
from portway.sdk import ModelClass
from portway.sdk.config import ModelConfig

TOML = """\
[model]
user = "alice"
app = "demo"
id = "m"
{extra}
"""


def write_folder(folder: Path, code: str, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(textwrap.dedent(code))
    (folder / "portway-model.toml").write_text(TOML.format(extra=textwrap.dedent(extra)))
    return folder


def chat_backend(model: ModelClass, **config: Any) -> PythonChatBackend:
    values: dict[str, Any] = {"user": "alice", "app": "demo", "id": "m", **config}
    parsed = ModelConfig.model_validate(values)
    model.config = parsed
    return PythonChatBackend(model, parsed)


def request(
    text: str = "hi there",
    *,
    max_tokens: int | None = None,
    stop: tuple[str, ...] = (),
    tools: tuple[str, ...] = (),
    tool_mode: str = "auto",
) -> GenerationRequest:
    return GenerationRequest(
        (Message("user", text),),
        SamplingParams(max_tokens=max_tokens, stop=stop),
        tools=tuple(ToolSpec(name) for name in tools),
        tool_mode=tool_mode,  # type: ignore[arg-type]
    )


async def collect(backend: ChatBackend, req: GenerationRequest) -> list[Delta]:
    return [delta async for delta in backend.generate(req)]


async def first_items(stream: AsyncIterator[Delta], count: int) -> list[Delta]:
    return [await anext(stream) for _ in range(count)]
