"""The one token estimate, for text no tokenizer of Portway's counts (a hosted
model's stream without usage, a runner's prompt): one token per four characters,
rounded, and at least one for a non-empty piece."""

from __future__ import annotations


def estimate_tokens(chars: int) -> int:
    """Approximate tokens for a piece of ``chars`` characters of text."""
    return 0 if chars <= 0 else max(1, (chars + 2) // 4)
