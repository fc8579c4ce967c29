"""The catalogue: a TOML file that declares the models a server runs.

default_model = true            # serve the embedded Gemma 3 270M (default)

[[models]]
user = "me"
app = "chat"
model = "qwen3-0.6b"
backend = "llamacpp"            # or "scripted" (a canned-text model for tests)
path = "models/qwen3-0.6b.gguf" # relative to this file
context_length = 4096
threads = 2
chat_template = "gemma"         # or Jinja source; default: the GGUF's own
aliases = ["qwen"]
visibility = "public"           # or "private": the owner (user) alone
max_queue = 32
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from portway.registry.refs import SEGMENT

DEFAULT_USER, DEFAULT_APP, DEFAULT_MODEL = "google", "gemma", "gemma-3-270m"

Name = Annotated[str, Field(pattern=f"^{SEGMENT.pattern}$")]


class CatalogError(ValueError):
    """The catalogue file cannot be used; the message says why and where."""


class BaseSpec(BaseModel):
    """What every catalogue entry has; each backend adds its own fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user: Name
    app: Name
    model: Name
    aliases: tuple[str, ...] = ()
    visibility: Literal["public", "private"] = "public"
    created: int | None = None

    @property
    def reference(self) -> str:
        return f"{self.user}/{self.app}/models/{self.model}"


class LlamaCppSpec(BaseSpec):
    """A GGUF model run on the CPU by llama.cpp."""

    backend: Literal["llamacpp"]
    path: Path | None = None
    context_length: int | None = Field(default=None, ge=16)
    threads: int | None = Field(default=None, ge=1)
    chat_template: str | None = None
    max_queue: int = Field(default=32, ge=0)


class ScriptedSpec(BaseSpec):
    """A model that replies with ``script``, one piece per token, ``delay`` apart."""

    backend: Literal["scripted"]
    script: tuple[str, ...] = ("Hello", " from", " Portway", ".")
    delay: float = Field(default=0.0, ge=0, le=60)


# A new backend adds its spec class here and its builder in registry/loader.py.
ModelSpec = Annotated[LlamaCppSpec | ScriptedSpec, Field(discriminator="backend")]


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default_model: bool = True
    aliases: dict[str, str] = {}
    models: tuple[ModelSpec, ...] = ()


def default_model_spec(threads: int | None = None) -> LlamaCppSpec:
    return LlamaCppSpec(
        user=DEFAULT_USER,
        app=DEFAULT_APP,
        model=DEFAULT_MODEL,
        backend="llamacpp",
        threads=threads,
        aliases=("gemma-3-270m",),
    )


def load(path: Path | None) -> Catalog:
    """Read and validate a catalogue file; no file means the default catalogue."""
    if path is None or not path.exists():
        return Catalog()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        catalog = Catalog.model_validate(raw)
    except (tomllib.TOMLDecodeError, ValidationError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{path}: {exc}") from exc
    return _resolve_paths(catalog, path.parent)


def specs(catalog: Catalog) -> list[ModelSpec]:
    """Every model the catalogue serves, the default one first."""
    found = [default_model_spec()] if catalog.default_model else []
    return found + list(catalog.models)


def _resolve_paths(catalog: Catalog, base: Path) -> Catalog:
    """Relative ``path`` fields are relative to the catalogue file."""
    models = []
    for spec in catalog.models:
        path = getattr(spec, "path", None)
        if isinstance(path, Path) and not path.is_absolute():
            spec = spec.model_copy(update={"path": base / path})
        models.append(spec)
    return catalog.model_copy(update={"models": tuple(models)})
