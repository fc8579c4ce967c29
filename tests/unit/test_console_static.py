"""The console's shipped files keep its security promises by construction: the
script never turns text into HTML, and nothing inline needs the CSP relaxed."""

from __future__ import annotations

import re
from importlib import resources

from portway.console.pages import CSP, SHELL, STATIC

HTML_SINKS = ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(")


def _static(name: str) -> str:
    return resources.files("portway.console").joinpath("static", name).read_text()


def test_the_script_has_no_html_sink() -> None:
    script = _static("console.js")
    assert [sink for sink in HTML_SINKS if sink in script] == []
    assert "new Function" not in script


def test_every_static_file_is_shipped() -> None:
    for name in STATIC:
        assert _static(name)


def test_the_shell_needs_nothing_inline() -> None:
    assert "unsafe" not in CSP
    assert "<script>" not in SHELL and "style=" not in SHELL
    assert not re.search(r"\son\w+=", SHELL)  # no inline event handlers
    assert re.findall(r'<script[^>]*src="([^"]+)"', SHELL) == ["/console/static/console.js"]
