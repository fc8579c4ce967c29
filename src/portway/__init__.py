"""Portway: a self-hosted, OpenAI-compatible model platform."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from portway.sdk import ModelClass, OpenAIModelClass

__all__ = ["ModelClass", "OpenAIModelClass", "__version__"]


def __getattr__(name: str) -> Any:
    """``ModelClass`` and ``OpenAIModelClass`` import on first use, so that
    ``import portway`` stays light."""
    if name in ("ModelClass", "OpenAIModelClass"):
        from portway import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'portway' has no attribute {name!r}")
