"""The names ``portway`` and ``portway.sdk`` export are the ones the README's
"Public names" paragraph lists: adding, removing or renaming one on either side
without the other fails."""

from __future__ import annotations

import re
from pathlib import Path

import portway
import portway.sdk

README = Path(__file__).resolve().parents[2] / "README.md"
ITEM = re.compile(r"^- `(?P<module>portway(?:\.\w+)*)`: (?P<text>.*?)(?=^- |^$)", re.M | re.S)


def _documented() -> dict[str, set[str]]:
    """Each module's names, as the paragraph's list items write them in backquotes
    (a call's arguments are not names)."""
    text = README.read_text(encoding="utf-8")
    section = text.split("**Public names.**", 1)[1].split("\n\n", 2)[1]
    found: dict[str, set[str]] = {}
    for item in ITEM.finditer(section + "\n\n"):
        names = re.findall(r"`(\w+)(?:\([^`]*\))?`", item["text"])
        found[item["module"]] = set(names)
    return found


def test_the_readme_lists_what_portway_exports() -> None:
    documented = _documented()
    assert documented["portway"] == set(portway.__all__)
    assert documented["portway.sdk"] == set(portway.sdk.__all__)


def test_every_exported_name_exists() -> None:
    for module in (portway, portway.sdk):
        for name in module.__all__:
            assert getattr(module, name) is not None
