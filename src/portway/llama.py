"""``open_llama``: llama-cpp-python for user models, loaded as Portway loads GGUFs."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def open_llama(path: str | Path | None = None, **kwargs: Any) -> Any:
    """A ``llama_cpp.Llama`` on ``path`` (default: Portway's embedded Gemma 3 270M,
    assembled once into the data directory's ``models``: ``$PORTWAY_DATA_DIR``,
    by default ``~/.local/share/portway``).

    llama.cpp's extra buffer types stay off on CPUs that advertise AMX, whose
    kernels crash on virtual machines that do not enable it. ``kwargs`` go to
    ``Llama`` (``verbose`` defaults to False).
    """
    from llama_cpp import Llama

    from portway.backends.llamacpp import cpu_advertises_amx, model_params

    if path is None:
        from portway.backends.default_model import ensure_default_gguf

        path = ensure_default_gguf(_data_dir())
    kwargs.setdefault("verbose", False)
    with model_params(extra_buffer_types=not cpu_advertises_amx()):
        return Llama(str(path), **kwargs)


def _data_dir() -> Path:
    from portway.settings import Settings

    return Settings.from_env().data_dir
