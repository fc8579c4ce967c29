from __future__ import annotations

import pytest

from portway.backends.base import Grammar
from portway.constrain.either import calls_or_answer


def test_both_starts_become_branches() -> None:
    calls = Grammar('start: call\ncall: "x"', "calls")
    answer = Grammar("start: %json {}", "answer", param="response_format")
    joined = calls_or_answer(calls, answer)
    assert joined.source.splitlines()[0] == "start: either_calls | either_answer"
    assert "either_calls: call" in joined.source
    assert "either_answer: %json {}" in joined.source
    assert joined.param == "response_format"


def test_clashing_rules_are_refused() -> None:
    with pytest.raises(ValueError, match="same rule"):
        calls_or_answer(Grammar('start: a\na: "x"'), Grammar('start: a\na: "y"'))
