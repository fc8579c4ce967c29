"""What a request is counted as against tokens per minute before it runs, as
OpenAI counts it: its prompt, estimated from the body's length (the one token
estimate, :func:`portway.backends.tokens.estimate_tokens`), plus the most it may
generate (``max_tokens``, ``max_completion_tokens`` or ``max_output_tokens``,
times ``n``). Once it ends, what it used replaces the estimate."""

from __future__ import annotations

from portway.backends.tokens import estimate_tokens

OUTPUT_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


def request_estimate(body_bytes: int, body: object) -> int:
    most = next(
        (value for name in OUTPUT_FIELDS if isinstance(value := getattr(body, name, None), int)),
        0,
    )
    choices = getattr(body, "n", None) if most else None
    return estimate_tokens(body_bytes) + most * (choices if isinstance(choices, int) else 1)
