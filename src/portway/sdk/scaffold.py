"""The model ``portway model init`` writes: an echo chat model."""

from __future__ import annotations

from pathlib import Path

MODEL_PY = '''"""An echo chat model: streams the last user message back word by word.

Given tools and ``tool_choice`` "required" (or a named tool), it calls the tool
instead, with the message as each required string argument.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from portway import ModelClass
from portway.sdk import GenerateParams, Output, ToolCall, Usage


class Echo(ModelClass):
    def count_tokens(self, text: str) -> int:
        """One token per word."""
        return len(text.split())

    def generate(self, messages: list[dict[str, Any]], params: GenerateParams) -> Iterator[Output]:
        text = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        prompt_tokens = sum(self.count_tokens(m["content"]) for m in messages)
        tool = self._forced_tool(params)
        if tool is not None:
            yield ToolCall(tool["name"], _arguments(tool, text))
            return
        words = text.split()
        for index, word in enumerate(words):
            yield word if index == 0 else " " + word
        yield Usage(prompt_tokens=prompt_tokens, completion_tokens=len(words))

    def _forced_tool(self, params: GenerateParams) -> dict[str, Any] | None:
        functions = [tool["function"] for tool in params.tools]
        if params.forced_tool:
            return next(f for f in functions if f["name"] == params.forced_tool)
        if params.tool_choice == "required" and functions:
            return functions[0]
        return None


def _arguments(function: dict[str, Any], text: str) -> dict[str, Any]:
    """The message as every required string argument of ``function``."""
    schema = function.get("parameters") or {}
    properties = schema.get("properties", {})
    return {
        name: text
        for name in schema.get("required", [])
        if properties.get(name, {}).get("type") == "string"
    }
'''

CONFIG_TOML = """[model]
{user_line}
app = "{app}"
id = "{id}"
kind = "chat"
context_length = 4096
concurrency = 4
tools = true

[python]
requirements = []
"""


NO_OWNER = '# user = "alice"        # the owner; default: the runner token\'s user'


def write_echo_model(folder: Path, *, user: str | None, app: str, model_id: str) -> list[Path]:
    """Write the echo model into ``folder`` (created); refuse to overwrite files.
    Without ``user`` the model belongs to whoever serves it (a runner token's user)."""
    user_line = f'user = "{user}"' if user else NO_OWNER
    config = CONFIG_TOML.format(user_line=user_line, app=app, id=model_id)
    files = {folder / "model.py": MODEL_PY, folder / "portway-model.toml": config}
    existing = [str(path) for path in files if path.exists()]
    if existing:
        raise FileExistsError(f"not overwriting {', '.join(existing)}")
    folder.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
    return list(files)
