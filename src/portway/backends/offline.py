"""Keep Hugging Face libraries offline: Portway loads models from disk, never from a hub."""

from __future__ import annotations

import os

_OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def go_offline() -> None:
    """Set the variables that stop downloads; call before importing those libraries."""
    for name, value in _OFFLINE.items():
        os.environ.setdefault(name, value)
