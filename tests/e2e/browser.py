"""The system's Chromium, driven by Playwright (no browser is ever downloaded).

Without Chromium (or Playwright) the browser tests skip, saying why; under
``CI=true`` they fail instead. ``PORTWAY_CHROMIUM`` names another executable.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str | None:
    """The Chromium executable to launch, or None."""
    named = os.environ.get("PORTWAY_CHROMIUM")
    if named:
        return named if Path(named).exists() else None
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def require_chromium() -> str:
    """The executable; skips the test without one (fails under CI=true)."""
    reason = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "the playwright package is not installed (pip install -e '.[test]')"
    path = chromium_path()
    if reason is None and path is None:
        reason = "no Chromium found (apt-get install chromium, or set PORTWAY_CHROMIUM)"
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests need Chromium under CI: {reason}")
        pytest.skip(reason)
    assert path is not None
    return path
