"""Helpers for tests that need an external service (PostgreSQL, ...).

Outside CI a missing service skips the test; in CI (``CI=true``) it fails it,
so a broken CI service cannot silently turn into a green run.
"""

from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    """Whether we run in CI, where every service must be present."""
    return os.environ.get("CI", "").strip().lower() == "true"


def require_service(name: str, reachable: bool, reason: str) -> None:
    """Skip (or, in CI, fail) the current test unless service ``name`` is reachable.

    ``reason`` says why it is not, e.g. the connection error.
    """
    if reachable:
        return
    message = f"{name} is not available: {reason}"
    if in_ci():
        pytest.fail(f"{message} (CI=true, so this is an error)")
    pytest.skip(message)
