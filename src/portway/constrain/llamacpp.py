"""An llguidance tokenizer for a llama.cpp model's vocabulary.

Like ``llguidance.llamacpp.lltokenizer_from_vocab`` (which this follows), with two
differences so that the grammar sees exactly the text the backend emits:

* end tokens are every end-of-generation token plus the chat template's
  end-of-turn tokens, so a finished grammar lets the model end its turn;
* control tokens listed in ``text_tokens`` (tool-call and reasoning markers such
  as ``[TOOL_CALLS]``, which the backend writes out as text) are plain text to
  the grammar, so a grammar's ``"[TOOL_CALLS]"`` is written with that one token.

Other control tokens, and user-defined tokens shaped like ``<...>``, are special:
a grammar cannot produce them (except the end tokens, once it is complete).
Building reads every token once: about a second for a 262k vocabulary.
"""

from __future__ import annotations

import ctypes
from collections.abc import Collection
from typing import Any

import llama_cpp
import llguidance

_SPECIAL_PREFIX = b"\xff"
"""How llguidance marks a token as special in the token list it is given."""

_PIECE_BUFFER = 16 * 1024
_NOT_PLAIN = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED


def llama_tokenizer(
    vocab: Any,
    vocab_size: int,
    *,
    end_tokens: Collection[int],
    text_tokens: Collection[int] = (),
) -> llguidance.LLTokenizer:
    """The tokenizer of a ``llama_vocab``; ``vocab_size`` is the logits' length."""
    buffer = ctypes.create_string_buffer(_PIECE_BUFFER + 1)
    tokens: list[bytes] = []
    ends = set(end_tokens)
    for token in range(llama_cpp.llama_vocab_n_tokens(vocab)):
        attributes = llama_cpp.llama_token_get_attr(vocab, token)
        piece = _piece(vocab, token, buffer)
        if token not in text_tokens and _is_special(attributes, piece):
            piece = _SPECIAL_PREFIX + piece
        tokens.append(piece)
        # Only control and user-defined tokens can end a generation (saves a call a token).
        if attributes & _NOT_PLAIN and llama_cpp.llama_vocab_is_eog(vocab, token):
            ends.add(token)
    tokens += [b""] * (vocab_size - len(tokens))
    tokenize = ctypes.cast(llama_cpp.llama_cpp._lib.llama_tokenize, ctypes.c_void_p).value
    tokenizer: llguidance.LLTokenizer = llguidance.LLTokenizer.from_llamacpp(  # type: ignore[attr-defined]
        tokens=tokens,
        vocab_ptr=vocab,
        tokenize_fptr=tokenize,
        eos_token=sorted(ends),
        slices=None,
    )
    return tokenizer


def _piece(vocab: Any, token: int, buffer: Any) -> bytes:
    length = llama_cpp.llama_token_to_piece(vocab, token, buffer, _PIECE_BUFFER, 0, True)
    if length < 0:
        raise ValueError(f"Token {token} is longer than {_PIECE_BUFFER} bytes.")
    return bytes(buffer[:length])


def _is_special(attributes: int, piece: bytes) -> bool:
    if attributes & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL:
        return True
    looks_special = piece.startswith(b"<") and piece.endswith(b">")
    return bool(attributes & llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED) and looks_special
