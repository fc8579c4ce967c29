"""Version ids: what a model version is called, from what defines it (no imports
beyond the standard library, so model folders can be versioned anywhere)."""

from __future__ import annotations

import hashlib
import json


def version_id(*parts: object) -> str:
    """A stable version id (32 lower-case hex digits) from what defines a version."""
    text = json.dumps([str(part) for part in parts])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
