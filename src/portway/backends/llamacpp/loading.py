"""Loading a GGUF with llama.cpp: opening it at the right context length, its
model and context parameters, the CPU check for AMX, its control tokens and its
trained context.

The context is made for batching: ``parallel`` sequences (slots), each with a KV
cache of ``n_ctx`` cells of its own (``parallel * n_ctx`` in all).
Its sliding-window layers keep a full-size cache (``swa_full``): a cached prefix
can then be cut at any position and reused, as a windowed cache prunes the cells
that fell out of the window.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp

from portway.backends.llamacpp.control_text import ControlToken
from portway.digits import ascii_decimal
from portway.errors import BackendError

DEFAULT_MAX_CONTEXT = 8192
"""Without an explicit ``n_ctx``: the model's trained context, but at most this."""

_PARSED_ONLY_AS_SPECIAL = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
_LSTRIP = llama_cpp.LLAMA_TOKEN_ATTR_LSTRIP
_RSTRIP = llama_cpp.LLAMA_TOKEN_ATTR_RSTRIP


_PARAMS_PATCH_LOCK = threading.RLock()


def load_llama(
    model_path: Path,
    *,
    n_ctx: int | None,
    n_threads: int | None,
    extra_buffer_types: bool,
    model_name: str,
    parallel: int = 1,
    n_gpu_layers: int = 0,
) -> Any:
    """Opens the GGUF (blocking) with ``parallel`` slots of ``n_ctx`` tokens each,
    or else of its trained context but at most ``DEFAULT_MAX_CONTEXT``; raises
    ``BackendError`` if it cannot be loaded."""
    options = _Options(parallel, n_threads, extra_buffer_types, n_gpu_layers, model_name)
    llama = _open(model_path, n_ctx or DEFAULT_MAX_CONTEXT, options)
    trained = trained_context(llama.metadata)
    if n_ctx is None and trained is not None and trained < DEFAULT_MAX_CONTEXT:
        llama.close()
        llama = _open(model_path, trained, options)
    return llama


@dataclass(frozen=True)
class _Options:
    parallel: int
    n_threads: int | None
    extra_buffer_types: bool
    n_gpu_layers: int
    model_name: str


def _open(model_path: Path, n_ctx: int, options: _Options) -> Any:
    try:
        with (
            model_params(extra_buffer_types=options.extra_buffer_types),
            context_params(parallel=options.parallel),
        ):
            return llama_cpp.Llama(
                str(model_path),
                n_ctx=n_ctx * options.parallel,
                n_threads=options.n_threads,
                n_gpu_layers=options.n_gpu_layers,
                verbose=False,
                logits_all=False,
                swa_full=True,
            )
    except (ValueError, RuntimeError) as exc:
        raise BackendError(f"Could not load the model '{options.model_name}'.") from exc


@contextlib.contextmanager
def context_params(*, parallel: int) -> Iterator[None]:
    """Lets ``Llama()`` make a context of ``parallel`` sequences, each with a KV
    cache of its own (llama-cpp-python has no arguments for ``n_seq_max`` and
    ``kv_unified``): where a sequence's cells lie then does not depend on the
    others, which keeps prefix reuse exact (see ``engine``)."""
    low_level = llama_cpp.llama_cpp
    original = low_level.llama_context_default_params

    def defaults() -> Any:
        params = original()
        params.n_seq_max = parallel
        params.kv_unified = False
        return params

    with _PARAMS_PATCH_LOCK:
        low_level.llama_context_default_params = defaults
        try:
            yield
        finally:
            low_level.llama_context_default_params = original


@contextlib.contextmanager
def model_params(*, extra_buffer_types: bool) -> Iterator[None]:
    """Lets ``Llama()`` load with llama.cpp's ``use_extra_bufts`` set as given.

    llama-cpp-python has no argument for it, so while this is active the defaults it
    starts from are adjusted. Extra buffer types are weight repacking and AMX; AMX
    kernels crash (SIGSEGV in ``ldtilecfg``) on virtual machines whose CPU advertises
    AMX without enabling it.
    """
    if extra_buffer_types:
        yield
        return
    low_level = llama_cpp.llama_cpp
    original = low_level.llama_model_default_params

    def defaults() -> Any:
        params = original()
        params.use_extra_bufts = False
        return params

    with _PARAMS_PATCH_LOCK:
        low_level.llama_model_default_params = defaults
        try:
            yield
        finally:
            low_level.llama_model_default_params = original


def cpu_advertises_amx() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            return any(line.startswith("flags") and " amx_tile" in line for line in cpuinfo)
    except OSError:
        return False


def control_tokens(llama: Any) -> Iterator[tuple[str, ControlToken]]:
    """The tokens of ``llama`` (a ``llama_cpp.Llama``) that llama.cpp parses from
    text only when asked to (control and unknown tokens), by their text, with their
    whitespace stripping."""
    vocab = llama_cpp.llama_model_get_vocab(llama.model)
    for token in range(int(llama.n_vocab())):
        attr = int(llama_cpp.llama_vocab_get_attr(vocab, token))
        if attr & _PARSED_ONLY_AS_SPECIAL:
            text = llama_cpp.llama_vocab_get_text(vocab, token)
            yield (
                text.decode("utf-8", errors="replace"),
                ControlToken(token, bool(attr & _LSTRIP), bool(attr & _RSTRIP)),
            )


def trained_context(metadata: Mapping[str, str]) -> int | None:
    """The context length a GGUF was trained with, from ``<arch>.context_length``."""
    architecture = metadata.get("general.architecture", "")
    value = metadata.get(f"{architecture}.context_length", "")
    return ascii_decimal(value)
