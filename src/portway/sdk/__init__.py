"""Portway's model SDK: a model is a folder with ``model.py`` (a ``ModelClass``
subclass) and ``portway-model.toml``; ``load_model_dir`` turns it into a backend
(it lives with that backend family, in ``portway.backends.python.loader``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from portway.sdk.model import ModelClass
from portway.sdk.types import (
    GenerateParams,
    Output,
    Reasoning,
    Text,
    ToolCall,
    ToolCallDelta,
    Usage,
)

if TYPE_CHECKING:
    from portway.backends.python.loader import LoadedModel, load_model_dir
    from portway.sdk.config import ModelConfig, ModelConfigError
    from portway.sdk.openai_model import OpenAIModelClass
    from portway.sdk.requirements import MissingRequirements

__all__ = [
    "GenerateParams",
    "LoadedModel",
    "MissingRequirements",
    "ModelClass",
    "ModelConfig",
    "ModelConfigError",
    "OpenAIModelClass",
    "Output",
    "Reasoning",
    "Text",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
    "load_model_dir",
]

_LAZY = {
    "ModelConfig": "portway.sdk.config",
    "ModelConfigError": "portway.sdk.config",
    "LoadedModel": "portway.backends.python.loader",
    "load_model_dir": "portway.backends.python.loader",
    "OpenAIModelClass": "portway.sdk.openai_model",
    "MissingRequirements": "portway.sdk.requirements",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'portway.sdk' has no attribute {name!r}")
