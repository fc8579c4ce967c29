"""Sequence slots of a batched llama.cpp context and what their KV cache holds.

Each slot is one llama.cpp sequence id. A slot keeps the tokens whose keys and
values are in the cache after its request ends, so a later request that starts
with the same tokens (a multi-turn chat, the tool-call loop, a shared system
prompt) takes that slot and evaluates only what follows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from portway.backends.llamacpp.prefix import common_prefix


@dataclass
class Slot:
    """One sequence id; ``tokens`` are those in the cache at positions 0, 1, ...

    ``canonical``: how many of them were evaluated exactly as a fresh evaluation
    of a prompt starting with them would evaluate them (whole prompt chunks, see
    ``engine``): only those may be reused.
    """

    seq_id: int
    tokens: list[int] = field(default_factory=list)
    busy: bool = False
    last_used: int = 0
    canonical: int = 0

    def reusable(self) -> list[int]:
        return self.tokens[: self.canonical]

    def cut(self, length: int) -> None:
        """Forgets the tokens from ``length`` on."""
        del self.tokens[length:]
        self.canonical = min(self.canonical, length)


class SlotTable:
    """The slots of one context, and which are free."""

    def __init__(self, count: int) -> None:
        self.slots = [Slot(seq_id) for seq_id in range(count)]
        self._clock = 0

    def free_count(self) -> int:
        return sum(not slot.busy for slot in self.slots)

    def take_best(self, prompt: Sequence[int]) -> tuple[Slot, int]:
        """The free slot sharing the longest prefix with ``prompt`` (ties: the one
        used longest ago), marked busy, and the length of that shared prefix."""
        free = [slot for slot in self.slots if not slot.busy]
        best = max(free, key=lambda slot: (common_prefix(slot.reusable(), prompt), -slot.last_used))
        return self._take(best), common_prefix(best.reusable(), prompt)

    def take_least_useful(self) -> Slot:
        """The free slot used longest ago, marked busy (its cache will be replaced)."""
        free = [slot for slot in self.slots if not slot.busy]
        return self._take(min(free, key=lambda slot: slot.last_used))

    def release(self, slot: Slot) -> None:
        self._clock += 1
        slot.busy = False
        slot.last_used = self._clock

    def _take(self, slot: Slot) -> Slot:
        self._clock += 1
        slot.busy = True
        slot.last_used = self._clock
        return slot
