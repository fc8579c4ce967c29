"""The tree drawn in ``portway.errors``'s docstring is the real one: every subclass
of ``PortwayError`` defined anywhere in ``src/portway`` is drawn under its base."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from portway import errors

SRC = Path(errors.__file__).parent
DRAWN = re.compile(r"^    (?P<indent>(?:[│ ]   )*)(?P<branch>[├└]── )?(?P<name>[A-Z]\w+)\s")


def _bases() -> dict[str, set[str]]:
    """Every class in ``src/portway`` and the names of its bases."""
    found: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                names = {ast.unparse(base).rsplit(".", 1)[-1] for base in node.bases}
                found.setdefault(node.name, set()).update(names)
    return found


def _subclasses(bases: dict[str, set[str]], root: str) -> set[str]:
    tree = {root}
    while grown := {name for name, parents in bases.items() if parents & tree} - tree:
        tree |= grown
    return tree


def _drawn() -> dict[str, str | None]:
    """Each class the docstring draws and the class it is drawn under."""
    parents: dict[str, str | None] = {}
    path: list[str] = []
    for line in (errors.__doc__ or "").splitlines():
        match = DRAWN.match(line)
        if match is None:
            continue
        depth = len(match["indent"]) // 4 + (1 if match["branch"] else 0)
        path[depth:] = [match["name"]]
        parents[match["name"]] = path[depth - 1] if depth else None
    return parents


def test_every_portway_error_is_drawn_under_one_of_its_bases() -> None:
    bases = _bases()
    drawn = _drawn()
    subclasses = _subclasses(bases, "PortwayError")
    assert set(drawn) == subclasses
    for name, parent in drawn.items():
        if parent is not None:
            assert parent in bases[name], f"{name} is drawn under {parent}"


def test_the_drawing_is_read_as_a_tree() -> None:
    drawn = _drawn()
    assert drawn["PortwayError"] is None
    assert drawn["InvalidRequest"] == "PortwayError"
    assert drawn["EventTooLarge"] == "MalformedStream"
    assert drawn["UpstreamTimedOut"] == "GatewayTimeout"
