"""``open_llama``: llama-cpp-python for user models, loaded as Portway loads GGUFs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from portway.backends.llamacpp.control_text import ControlTexts


def open_llama(path: str | Path | None = None, **kwargs: Any) -> Any:
    """A ``llama_cpp.Llama`` on ``path`` (default: Portway's embedded Gemma 3 270M,
    assembled once into the data directory's ``models``: ``$PORTWAY_DATA_DIR``,
    by default ``~/.local/share/portway``).

    llama.cpp's extra buffer types stay off on CPUs that advertise AMX, whose
    kernels crash on virtual machines that do not enable it. ``kwargs`` go to
    ``Llama`` (``verbose`` defaults to False).
    """
    from llama_cpp import Llama

    from portway.backends.llamacpp.loading import cpu_advertises_amx, model_params

    if path is None:
        from portway.backends.llamacpp.default_model import ensure_default_gguf

        path = ensure_default_gguf(_data_dir())
    kwargs.setdefault("verbose", False)
    with model_params(extra_buffer_types=not cpu_advertises_amx()):
        return Llama(str(path), **kwargs)


def control_texts(llama: Any) -> ControlTexts:
    """The control tokens of ``llama`` (from ``open_llama``) by their text.

    Tokenising a prompt with special tokens parsed (as ``Llama.create_completion``
    does with a string) lets a client who writes ``<end_of_turn>`` forge a turn. So
    ``mask`` the messages, render the prompt from the masked ones, and give llama.cpp
    ``tokenize``'s tokens: only the prompt's own markup becomes control tokens.
    """
    from portway.backends.llamacpp.control_text import ControlTexts
    from portway.backends.llamacpp.loading import control_tokens

    return ControlTexts(control_tokens(llama))


def _data_dir() -> Path:
    from portway.settings import Settings

    return Settings.from_env().data_dir
