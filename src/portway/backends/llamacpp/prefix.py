"""Exact prefix reuse: how many of a sequence's cached tokens a new prompt may keep.

Why reuse gave wrong logits on Gemma 3
--------------------------------------
Gemma 3 has sliding-window attention (SWA): most of its layers attend only to the
last ``n_swa`` positions (512 for the 270M). llama.cpp gives those layers their own
small KV cache (``n_swa`` plus one micro-batch of cells, e.g. 1024 cells with
``n_ubatch=512``, 768 with 64) unless the context is made with ``swa_full``. Once a
sequence outgrows that cache, its oldest cells are overwritten: the SWA layers no
longer hold positions below ``llama_memory_seq_pos_min``; the full-attention layers
still hold everything from position 0.

Rewinding such a sequence with ``llama_memory_seq_rm(mem, seq, n, -1)`` succeeds
(it returns true: nothing is refused and no stale cell is left behind), but when
``n`` lies inside the evicted part, the SWA cache is left empty or with a gap, and
the next ``llama_decode`` at position ``n`` silently attends to too few tokens in
those layers. llama-cpp-python 0.3.36's ``Llama.generate`` reuses the common prefix
of the previous call's tokens that way, checking only the return value. After one
long generation (over ~1,000 tokens, e.g. a request without ``max_tokens``), the
next request for the same prompt (wholly cached: it rewinds to the prompt's last
token) or for one sharing a short prefix decoded with the SWA layers blind:
different logits, other text under the same seed.

Within the window, reuse is bit-exact: with the cells present, the logits after
keeping a prefix and evaluating the rest equal those of evaluating the whole prompt
afresh (tests/unit/backends/llamacpp/test_prefix_reuse.py shows both, on Gemma 3
and on a model without SWA).

The rule
--------
Evaluating position ``n`` needs every position the model attends to from there:
all of ``0..n-1`` for full attention, which llama.cpp keeps; and for SWA layers the
positions after ``n - n_swa``. So a prefix of ``n`` tokens may be kept only when
``llama_memory_seq_pos_min`` (the oldest position still in the sequence's SWA
cache) is at most ``max(0, n - n_swa)``, the same bound llama.cpp's own server
checks. Otherwise the whole prompt is evaluated again. At most ``len(prompt) - 1``
tokens are kept, so that the last prompt token is evaluated and gives the logits
of the first sampled token.

For an engine: ``keep = reusable_length(...)``, then
``llama_memory_seq_rm(mem, seq, keep, -1)`` and evaluate ``prompt[keep:]`` from
position ``keep``. Multi-turn chats keep almost everything: the new prompt shares
the previous turn's tokens up to its end, well inside the window. ``swa_full=True``
makes every prefix reusable at the cost of a full-size cache for the SWA layers.

Reusing another sequence's cells: with ``kv_unified=False`` (a KV stream per
sequence), llama.cpp copies between sequences only whole buffers;
``llama_memory_seq_cp`` with a partial range aborts the process
(``GGML_ASSERT``). Copy with ``p0 = p1 = -1``, then ``seq_rm`` the tail of the copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


def common_prefix(cached: Sequence[int], prompt: Sequence[int]) -> int:
    """How many leading tokens ``cached`` and ``prompt`` share."""
    shared = 0
    for cached_token, prompt_token in zip(cached, prompt, strict=False):
        if cached_token != prompt_token:
            break
        shared += 1
    return shared


@dataclass(frozen=True)
class AttentionSpan:
    """How far back a model's layers look: ``n_swa`` positions for its sliding-window
    layers (0 when every layer attends to the whole sequence)."""

    n_swa: int

    @classmethod
    def of_model(cls, model: Any) -> AttentionSpan:
        """The span of a loaded ``llama_model`` pointer."""
        import llama_cpp

        return cls(max(0, int(llama_cpp.llama_model_n_swa(model))))

    def oldest_position_needed(self, position: int) -> int:
        """The oldest cached position that evaluating ``position`` may attend to."""
        if self.n_swa <= 0:
            return 0
        return max(0, position - self.n_swa)


def reusable_length(
    cached: Sequence[int], prompt: Sequence[int], *, pos_min: int, span: AttentionSpan
) -> int:
    """How many tokens of ``cached`` (a sequence's tokens, in position order, all in
    its KV cache once) a request for ``prompt`` may keep: 0 means evaluate it all.

    ``pos_min`` is ``llama_memory_seq_pos_min`` for the sequence, read before any
    ``seq_rm``: -1 when it holds nothing.
    """
    keep = min(common_prefix(cached, prompt), len(prompt) - 1)
    if keep <= 0 or pos_min < 0:
        return 0
    if pos_min > span.oldest_position_needed(keep):
        return 0
    return keep
