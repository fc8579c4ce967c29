"""A grammar for ``tool_choice: "auto"`` with a JSON ``response_format``: the model
may call tools (in its family's syntax, arguments valid) or answer in the format,
and nothing else."""

from __future__ import annotations

import re

from portway.backends.base import Grammar

_START = re.compile(r"^start:", re.MULTILINE)


def calls_or_answer(calls: Grammar, answer: Grammar) -> Grammar:
    """Either ``calls`` or ``answer``: each grammar's ``start`` becomes a branch."""
    branches = []
    for name, grammar in (("either_calls", calls), ("either_answer", answer)):
        if not _START.search(grammar.source):
            raise ValueError("The grammar has no 'start' rule.")
        branches.append(_START.sub(f"{name}:", grammar.source, count=1))
    if _clash(branches[0], branches[1]):
        raise ValueError("The two grammars define the same rule.")
    source = "\n".join(("start: either_calls | either_answer", *branches))
    return Grammar(source, f"{calls.description} or {answer.description}", answer.param)


def _rules(source: str) -> set[str]:
    return set(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)\s*:", source, re.MULTILINE))


def _clash(first: str, second: str) -> bool:
    return bool(_rules(first) & _rules(second))
