"""Prefix reuse: how many of a sequence's cached tokens a new prompt may keep.

Why reuse was turned off: two causes
------------------------------------
1. Evaluation shape. On llama.cpp's CPU kernels a token's logits depend on how many
   rows its micro-batch holds: with weight repacking (``use_extra_bufts``, on by
   default on CPUs without AMX), evaluating the last token of a prompt alone gives
   logits up to ~0.4 away from evaluating it inside the whole prompt, and without
   repacking micro-batches of 2 to 5 rows still differ that much from one whole
   batch (small float differences flip the int8 rounding of quantized
   activations, and that grows through the layers). llama-cpp-python's
   ``Llama.generate``, given a prompt it has wholly cached, cuts one token and
   evaluates it alone: with repacking on, other logits, so the same seed wrote
   other text. That was the report that turned reuse off; Gemma's sliding window
   was not the cause there (``Llama()`` leaves llama.cpp's default ``swa_full``
   on, so nothing was evicted). What removes it: evaluate every prompt in the same
   shapes, so that the kept cells are those a fresh evaluation computes. The
   engine evaluates prompts in chunks aligned at multiples of its chunk size, each
   alone in its own decode, in per-sequence caches, and keeps whole chunks only
   (see ``engine``): bit-identical logits with and without reuse.

2. Sliding-window eviction. Gemma 3 has sliding-window attention (SWA): most
   layers attend only to the last ``n_swa`` positions (512 for the 270M). Without
   ``swa_full``, llama.cpp gives those layers a small cache (``n_swa`` plus one
   micro-batch of cells, rounded up: 1024 with ``n_ubatch`` 512, 768 with 64) and
   overwrites a sequence's oldest cells once it outgrows it. The SWA layers then no
   longer hold positions below ``llama_memory_seq_pos_min``. Cutting such a
   sequence with ``llama_memory_seq_rm(mem, seq, n, -1)`` still returns true (no
   refusal, no stale cell), but when ``n`` lies inside the evicted part the next
   ``llama_decode`` silently attends to too few tokens in those layers: logits
   off by tens. That is wrong, not noise, and the rule below prevents it.

tests/unit/backends/llamacpp/test_prefix_reuse.py shows both: greedy tokens after
keeping what the rule allows equal those of a fresh evaluation on Gemma 3 and on a
model without SWA, and a cut into evicted cells gives other logits.

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
