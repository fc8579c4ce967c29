"""Portway's storage layer: users, API tokens, usage records and model versions.

Open with ``await Store.open(url)``; everything it returns is a plain frozen
dataclass from :mod:`portway.store.records`.
"""

from portway.store.db import Store
from portway.store.records import (
    ANONYMOUS_USER,
    USAGE_STATUSES,
    TokenInfo,
    UsageRecord,
    UsageSummary,
    User,
)

__all__ = [
    "ANONYMOUS_USER",
    "USAGE_STATUSES",
    "Store",
    "TokenInfo",
    "UsageRecord",
    "UsageSummary",
    "User",
]
