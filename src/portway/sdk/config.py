"""``portway-model.toml``: a model folder's configuration.

[model] names the model (``{user}/{app}/models/{id}``) and says what it can do;
[python] lists the pip requirements it needs; [openai] configures an
``OpenAIModelClass``. Unknown tables and keys are errors.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from portway.registry.refs import SEGMENT
from portway.registry.runner_spec import RunnerTimeouts

CONFIG_FILE = "portway-model.toml"
Name = Field(pattern=f"^{SEGMENT.pattern}$")
TABLES = ("model", "python", "openai")


class ModelConfigError(ValueError):
    """The folder's configuration cannot be used; the message names the file and field."""


class OpenAIConfig(BaseModel):
    """Where an ``OpenAIModelClass`` finds its server (class attributes win over nothing;
    these win over class attributes)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str | None = None
    command: list[str] | None = None
    model: str | None = None
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    health_path: str | None = None
    startup_timeout: float | None = Field(default=None, gt=0, le=3600)


class ModelConfig(BaseModel):
    """The parsed file: the [model] table's keys, ``requirements`` from [python],
    ``openai`` from [openai]."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    user: str | None = Field(default=None, pattern=f"^{SEGMENT.pattern}$")
    """The owner; None: whoever serves it (a runner's token's user)."""
    app: str = Name
    id: str = Name
    kind: Literal["chat", "embedding", "image"] = "chat"
    context_length: int = Field(default=4096, ge=16)
    concurrency: int = Field(default=4, ge=1, le=1024)
    tools: bool = False
    response_format: bool = False
    reasoning: bool = False
    dimensions: int = Field(default=0, ge=0)
    class_name: str = Field(default="", alias="class")
    timeouts: RunnerTimeouts | None = None
    """Served by a runner: the server's first-byte and idle deadlines for its calls."""
    requirements: tuple[str, ...] = ()
    openai: OpenAIConfig | None = None

    @property
    def reference(self) -> str:
        """``{user}/{app}/models/{id}``; without a ``user``, ``{app}/models/{id}``
        (a runner's server puts the runner token's user in front)."""
        return self.owned_by(self.user) if self.user else f"{self.app}/models/{self.id}"

    def owned_by(self, user: str) -> str:
        """The reference, with ``user`` as the owner unless the file names one."""
        return f"{self.user or user}/{self.app}/models/{self.id}"


def _where(loc: tuple[int | str, ...]) -> str:
    head, *rest = [str(part) for part in loc] or ["model"]
    if head == "requirements":
        return ".".join(["python.requirements", *rest])
    if head == "openai":
        return ".".join([head, *rest])
    return ".".join(["model", "class" if head == "class_name" else head, *rest])


def _flatten(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    unknown = [key for key in raw if key not in TABLES]
    if unknown:
        raise ModelConfigError(f"{path}: unknown table [{unknown[0]}] (expected {TABLES})")
    for table in TABLES:
        if not isinstance(raw.get(table, {}), dict):
            raise ModelConfigError(f"{path}: [{table}] must be a table")
    python = dict(raw.get("python", {}))
    extra = [key for key in python if key != "requirements"]
    if extra:
        raise ModelConfigError(f"{path}: python.{extra[0]}: unknown key")
    flat = dict(raw.get("model", {}))
    if "requirements" in python:
        flat["requirements"] = python["requirements"]
    if "openai" in raw:
        flat["openai"] = raw["openai"]
    return flat


def load_config(folder: Path) -> ModelConfig:
    """Read and validate ``folder/portway-model.toml``."""
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise ModelConfigError(f"{path}: no such file (a model folder needs {CONFIG_FILE})")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ModelConfigError(f"{path}: not valid TOML: {exc}") from exc
    if "model" not in raw:
        raise ModelConfigError(f"{path}: the [model] table is missing")
    try:
        config = ModelConfig.model_validate(_flatten(raw, path))
    except ValidationError as exc:
        error = exc.errors()[0]
        raise ModelConfigError(f"{path}: {_where(error['loc'])}: {error['msg']}") from exc
    if config.kind == "embedding" and config.dimensions < 1:
        raise ModelConfigError(f"{path}: model.dimensions: an embedding model needs dimensions")
    return config
