from __future__ import annotations

import math

from portway.auth import tokens
from portway.auth.principal import bearer_token


def test_generated_tokens_are_well_formed_and_unique() -> None:
    made = {tokens.generate() for _ in range(200)}
    assert len(made) == 200
    assert all(tokens.is_well_formed(token) for token in made)
    assert all(token.startswith("pwt_") for token in made)


def test_at_least_160_random_bits() -> None:
    assert tokens.BODY_LENGTH * math.log2(len(tokens.ALPHABET)) >= 160


def test_checksum_catches_typos() -> None:
    token = tokens.generate()
    body_start = len(tokens.PREFIX)
    for position in range(body_start, len(token)):
        replacement = "0" if token[position] != "0" else "1"
        typo = token[:position] + replacement + token[position + 1 :]
        assert not tokens.is_well_formed(typo)


def test_malformed_shapes() -> None:
    token = tokens.generate()
    for bad in ("", "pwt_", token[:-1], token + "a", "xyz_" + token[4:], token.replace("_", "-")):
        assert not tokens.is_well_formed(bad)


def test_digest_is_sha256() -> None:
    assert len(tokens.digest(tokens.generate())) == 32


def test_bearer_and_key_headers() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("Key abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer") is None
    assert bearer_token(None) is None
