"""A tiny llama-architecture GGUF with random weights, for tests that need a second,
non-sliding-window model beside the embedded Gemma 3 270M.

Every layer attends to the whole sequence (no ``n_swa``), and the vocabulary is a
SentencePiece ("llama") one: the control tokens, the 256 byte tokens llama.cpp falls
back to, and one token per printable ASCII character. The weights are seeded, so
the same file comes out every time; what the model writes is meaningless but
deterministic on one machine. The file is well under 1 MB and builds in
milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

UNK, BOS, EOS = 0, 1, 2
_SPECIALS = ("<unk>", "<s>", "</s>")
_WORD_START = "\u2581"  # SentencePiece's mark for a preceding space


@dataclass(frozen=True)
class TinyShape:
    """The model's sizes; the defaults give a file of about 0.5 MB."""

    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 128
    context_length: int = 4096
    seed: int = 1234

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


def vocabulary() -> list[tuple[str, gguf.TokenType]]:
    """The tokens in id order, with their SentencePiece types."""
    specials = [
        (_SPECIALS[UNK], gguf.TokenType.UNKNOWN),
        (_SPECIALS[BOS], gguf.TokenType.CONTROL),
        (_SPECIALS[EOS], gguf.TokenType.CONTROL),
    ]
    byte_tokens = [(f"<0x{byte:02X}>", gguf.TokenType.BYTE) for byte in range(256)]
    pieces = [_WORD_START, *(chr(c) for c in range(0x21, 0x7F))]
    pieces += [_WORD_START + chr(c) for c in range(ord("a"), ord("z") + 1)]
    return specials + byte_tokens + [(piece, gguf.TokenType.NORMAL) for piece in pieces]


def write_tiny_llama(path: Path, shape: TinyShape = TinyShape()) -> Path:
    """Writes the tiny model to ``path`` and returns it."""
    writer = gguf.GGUFWriter(str(path), "llama")
    _add_hyperparameters(writer, shape)
    n_vocab = _add_tokenizer(writer)
    for name, weights in _tensors(shape, n_vocab):
        writer.add_tensor(name, weights)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _add_hyperparameters(writer: gguf.GGUFWriter, shape: TinyShape) -> None:
    writer.add_name("tiny-llama-random")
    writer.add_context_length(shape.context_length)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)


def _add_tokenizer(writer: gguf.GGUFWriter) -> int:
    tokens = vocabulary()
    writer.add_tokenizer_model("llama")
    writer.add_token_list([text for text, _ in tokens])
    # Longer pieces score higher, so the tokenizer prefers them to their parts.
    writer.add_token_scores([float(len(text)) for text, _ in tokens])
    writer.add_token_types([int(kind) for _, kind in tokens])
    writer.add_unk_token_id(UNK)
    writer.add_bos_token_id(BOS)
    writer.add_eos_token_id(EOS)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    return len(tokens)


def _tensors(shape: TinyShape, n_vocab: int) -> list[tuple[str, np.ndarray]]:
    """The weights, numpy shape (rows = outputs, columns = inputs)."""
    rng = np.random.default_rng(shape.seed)
    d, hd = shape.n_embd, shape.head_dim

    def matrix(rows: int, cols: int) -> np.ndarray:
        weights: np.ndarray = rng.standard_normal((rows, cols)) / np.sqrt(cols)
        return weights.astype(np.float32)

    def norm() -> np.ndarray:
        return np.ones(d, dtype=np.float32)

    tensors = [("token_embd.weight", matrix(n_vocab, d) * np.float32(np.sqrt(d)))]
    for layer in range(shape.n_layer):
        block = f"blk.{layer}"
        tensors += [
            (f"{block}.attn_norm.weight", norm()),
            (f"{block}.attn_q.weight", matrix(shape.n_head * hd, d)),
            (f"{block}.attn_k.weight", matrix(shape.n_head_kv * hd, d)),
            (f"{block}.attn_v.weight", matrix(shape.n_head_kv * hd, d)),
            (f"{block}.attn_output.weight", matrix(d, shape.n_head * hd)),
            (f"{block}.ffn_norm.weight", norm()),
            (f"{block}.ffn_gate.weight", matrix(shape.n_ff, d)),
            (f"{block}.ffn_up.weight", matrix(shape.n_ff, d)),
            (f"{block}.ffn_down.weight", matrix(d, shape.n_ff)),
        ]
    tensors += [("output_norm.weight", norm()), ("output.weight", matrix(n_vocab, d) * 4)]
    return tensors
